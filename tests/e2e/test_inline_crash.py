"""Inline activities across a worker SIGKILL: killed before the activity's schedule was
recorded (it runs again, recorded once) and after it was recorded as started (retried)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.e2e import activity_workflows as aw
from tests.e2e.processes import ServerProcess, start_worker
from tests.e2e.test_activity_crash import read_lines, wait_for_lines
from tests.e2e.test_crash import wait_for_events

MODULE = "tests.e2e.activity_workflows"


def _activity_events(history: list[Any]) -> list[Any]:
    assert [e.id for e in history] == list(range(1, len(history) + 1))
    return [e for e in history if e.type.startswith("Activity")]


async def test_worker_killed_before_the_inline_schedule_was_recorded(
    server: ServerProcess, client: Any, tmp_path: Path
) -> None:
    """The completion waits (budget 60 s) for the hanging activity: nothing about it is
    recorded when the worker dies, so the retried workflow task runs it again."""
    log = tmp_path / "runs.log"
    first = start_worker(
        server.address,
        MODULE,
        "inl1",
        "--inline-activity-budget",
        "60",
        CHRONICLE_TEST_LOG=str(log),
    )
    second = None
    try:
        handle = await client.start(aw.inline_then_crash, id="inline-crash-1", task_queue="inl1")
        await wait_for_lines(log, "stalls_first_time", 1)
        assert not _activity_events(await handle.history())  # ran, but not recorded
        first.kill()
        second = start_worker(server.address, MODULE, "inl1", CHRONICLE_TEST_LOG=str(log))
        assert await asyncio.wait_for(handle.result(), 40) == 2
        history = await handle.history()
        scheduled, completed = _activity_events(history)
        assert (scheduled.type, completed.type) == ("ActivityScheduled", "ActivityCompleted")
        assert completed.attributes.attempt == 1  # the lost run was never an attempt
        assert any(e.type == "WorkflowTaskTimedOut" for e in history)
        assert len(read_lines(log)) == 2  # at least once: the unrecorded run and the recorded one
    finally:
        first.kill()
        if second is not None:
            second.kill()


async def test_worker_killed_after_the_inline_activity_was_recorded_as_started(
    server: ServerProcess, client: Any, tmp_path: Path
) -> None:
    """Past the budget the activity is recorded as started by the worker; its death times the
    attempt out at once and attempt 2 runs on the new worker."""
    log = tmp_path / "runs.log"
    first = start_worker(
        server.address,
        MODULE,
        "inl2",
        "--inline-activity-budget",
        "0.05",
        CHRONICLE_TEST_LOG=str(log),
    )
    second = None
    try:
        handle = await client.start(aw.inline_then_crash, id="inline-crash-2", task_queue="inl2")
        await wait_for_lines(log, "stalls_first_time", 1)
        await wait_for_events(handle, "ActivityScheduled", 1)
        [pending] = (await handle.describe()).pending_activities
        assert pending.attempt == 1
        first.kill()
        second = start_worker(server.address, MODULE, "inl2", CHRONICLE_TEST_LOG=str(log))
        assert await asyncio.wait_for(handle.result(), 40) == 2
        scheduled, completed = _activity_events(await handle.history())
        assert (scheduled.type, completed.type) == ("ActivityScheduled", "ActivityCompleted")
        assert completed.attributes.attempt == 2
        assert len(read_lines(log)) == 2
    finally:
        first.kill()
        if second is not None:
            second.kill()
