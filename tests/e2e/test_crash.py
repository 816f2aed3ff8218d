"""Crash safety: SIGKILL a worker or the server mid-workflow; the run must still finish with the
right result, and its history must hold every step exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.e2e import workflows as wf
from tests.e2e.processes import ManagedProcess, ServerProcess, start_worker

MODULE = "tests.e2e.workflows"


async def wait_for_events(handle: Any, type_name: str, count: int, timeout: float = 30.0) -> None:
    """Wait until the run's history holds at least ``count`` events of ``type_name``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        history = await handle.history()
        if sum(1 for e in history if e.type == type_name) >= count:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"fewer than {count} {type_name} events after {timeout}s")


def assert_each_step_recorded_once(history: list[Any], steps: int) -> None:
    """Ids 1..n with no gaps; one ActivityScheduled per seq and one completion per schedule."""
    assert [e.id for e in history] == list(range(1, len(history) + 1))
    scheduled = [e for e in history if e.type == "ActivityScheduled"]
    completed = [e for e in history if e.type == "ActivityCompleted"]
    assert sorted(e.attributes.seq for e in scheduled) == list(range(1, steps + 1))
    per_schedule = Counter(e.attributes.scheduled_event_id for e in completed)
    assert set(per_schedule) == {e.id for e in scheduled}
    assert set(per_schedule.values()) == {1}
    assert sum(1 for e in history if e.type == "WorkflowCompleted") == 1


async def test_worker_sigkill_mid_workflow_a_new_worker_finishes_it(
    server: ServerProcess, client: Any, tmp_path: Path
) -> None:
    log = tmp_path / "executions.log"
    first = start_worker(server.address, MODULE, "crash-w", CHRONICLE_TEST_LOG=str(log))
    second: ManagedProcess | None = None
    try:
        handle = await client.start(
            wf.slow_steps,
            0,
            6,
            id="crash-worker",
            task_queue="crash-w",
            task_timeout=timedelta(seconds=2),
        )
        await wait_for_events(handle, "ActivityCompleted", 2)
        await asyncio.sleep(0.2)  # most likely inside the third activity now
        first.kill()
        second = start_worker(server.address, MODULE, "crash-w", CHRONICLE_TEST_LOG=str(log))
        assert await asyncio.wait_for(handle.result(), 60) == 6
        assert_each_step_recorded_once(await handle.history(), steps=6)
        executions = log.read_text().splitlines()
        assert len(executions) >= 6  # at-least-once: the killed attempt may have run too
    finally:
        first.kill()
        if second is not None:
            second.kill()


async def test_killed_worker_is_noticed_by_its_dropped_session(
    server: ServerProcess, client: Any, tmp_path: Path
) -> None:
    """The attempt a SIGKILLed worker was running is retried long before its one-hour
    start-to-close timeout: the server times it out when the worker's session stream drops."""
    log = tmp_path / "executions.log"
    first = start_worker(server.address, MODULE, "crash-session", CHRONICLE_TEST_LOG=str(log))
    second: ManagedProcess | None = None
    try:
        handle = await client.start(
            wf.stalled_step, 41, id="crash-session", task_queue="crash-session"
        )
        deadline = asyncio.get_running_loop().time() + 30
        while "attempt 1" not in (log.read_text() if log.exists() else ""):
            assert asyncio.get_running_loop().time() < deadline, first.log()
            await asyncio.sleep(0.05)
        # attempt 1 runs inline: wait until it is recorded as started (docs/inline-activities.md)
        await wait_for_events(handle, "ActivityScheduled", 1)
        first.kill()
        second = start_worker(server.address, MODULE, "crash-session", CHRONICLE_TEST_LOG=str(log))
        assert await asyncio.wait_for(handle.result(), 60) == 42
        assert log.read_text().splitlines() == [
            "stalls_on_first_attempt 41 attempt 1",
            "stalls_on_first_attempt 41 attempt 2",
        ]
        history = await handle.history()
        completed = [e for e in history if e.type == "ActivityCompleted"]
        assert [e.attributes.attempt for e in completed] == [2]
    finally:
        first.kill()
        if second is not None:
            second.kill()


async def test_server_sigkill_mid_workflow_restart_finishes_it(
    server: ServerProcess, client: Any, tmp_path: Path
) -> None:
    worker = start_worker(server.address, MODULE, "crash-s", CHRONICLE_TEST_LOG=str(tmp_path / "l"))
    try:
        handle = await client.start(
            wf.slow_steps,
            10,
            6,
            id="crash-server",
            task_queue="crash-s",
            task_timeout=timedelta(seconds=2),
        )
        await wait_for_events(handle, "ActivityCompleted", 2)
        server.kill()
        await asyncio.sleep(0.5)
        server.start_listening()
        assert await asyncio.wait_for(handle.result(), 60) == 16
        assert_each_step_recorded_once(await handle.history(), steps=6)
        assert worker.alive, f"the worker should ride out the restart:\n{worker.log()}"
    finally:
        worker.kill()


async def test_server_sigterm_exits_cleanly(server: ServerProcess) -> None:
    assert server.terminate() == 0, server.log()
