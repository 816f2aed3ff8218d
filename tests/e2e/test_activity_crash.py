"""Activities across processes: a SIGKILLed worker mid-activity (heartbeat resume), a local
activity surviving a worker SIGKILL, and completion by token from another process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.e2e import activity_workflows as aw
from tests.e2e.processes import REPO_ROOT, ServerProcess, start_worker
from tests.e2e.test_crash import wait_for_events

MODULE = "tests.e2e.activity_workflows"


def read_lines(path: Path) -> list[str]:
    """The lines of ``path`` (none if it does not exist yet)."""
    return path.read_text().splitlines() if path.exists() else []


async def wait_for_lines(path: Path, prefix: str, count: int, timeout: float = 30.0) -> list[str]:
    """The log's lines starting with ``prefix``, once there are ``count`` of them."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        lines = read_lines(path)
        found = [line for line in lines if line.startswith(prefix)]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise TimeoutError(f"fewer than {count} lines {prefix!r} in {path} after {timeout}s")


async def test_heartbeat_timeout_notices_a_killed_worker_and_the_retry_resumes(
    server: ServerProcess, client: Any, tmp_path: Path
) -> None:
    """start_to_close is 60 s, heartbeat 1 s: the retry comes from the heartbeat timeout, and
    attempt 2 starts right after the last step attempt 1 heartbeated."""
    log = tmp_path / "runs.log"
    first = start_worker(server.address, MODULE, "hb", CHRONICLE_TEST_LOG=str(log))
    second = None
    try:
        handle = await client.start(aw.counts, 40, id="hb-resume", task_queue="hb")
        await wait_for_lines(log, "step", 5)
        first.kill()
        lines = read_lines(log)
        last_step = max(int(line.split()[1]) for line in lines if line.startswith("step"))
        pending = (await handle.describe()).pending_activities[0]
        heartbeated = pending.heartbeat_details[0]
        assert heartbeated <= last_step
        second = start_worker(server.address, MODULE, "hb", CHRONICLE_TEST_LOG=str(log))
        attempt, start = await asyncio.wait_for(handle.result(), 40)
        assert attempt == 2
        assert start == heartbeated + 1
        history = await handle.history()
        [timed] = [e for e in history if e.type == "ActivityCompleted"]
        assert timed.attributes.attempt == 2
        assert not [e for e in history if e.type in ("ActivityFailed", "ActivityTimedOut")]
        assert f"count_to attempt 2 starts at {heartbeated + 1}" in read_lines(log)
    finally:
        first.kill()
        if second is not None:
            second.kill()


async def test_a_local_activity_survives_a_worker_sigkill_and_is_recorded_once(
    server: ServerProcess, client: Any, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    first = start_worker(server.address, MODULE, "la", CHRONICLE_TEST_LOG=str(log))
    second = None
    try:
        handle = await client.start(
            aw.uses_local, 4, id="la-crash", task_queue="la", task_timeout=timedelta(seconds=2)
        )
        await wait_for_lines(log, "slow_local", 1)
        first.kill()  # mid local activity: its workflow task never completes
        second = start_worker(server.address, MODULE, "la", CHRONICLE_TEST_LOG=str(log))
        assert await asyncio.wait_for(handle.result(), 40) == 41
        runs = await wait_for_lines(log, "slow_local", 2)
        assert len(runs) == 2  # re-run by the second worker
        history = await handle.history()
        markers = [e for e in history if e.type == "MarkerRecorded"]
        assert len(markers) == 1
        assert markers[0].attributes.marker_name == "local_activity"
        assert "WorkflowTaskTimedOut" in [e.type for e in history]
        assert not [e for e in history if e.type == "ActivityScheduled"]
    finally:
        first.kill()
        if second is not None:
            second.kill()


async def test_async_completion_from_a_separate_process(
    server: ServerProcess, client: Any, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    worker = start_worker(server.address, MODULE, "ac", CHRONICLE_TEST_LOG=str(log))
    try:
        handle = await client.start(aw.waits_for_approval, "o-7", id="async-ext", task_queue="ac")
        [token] = await wait_for_lines(log, "{", 1)
        completed = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "tests.e2e.complete_activity", server.address, token, "ok"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert completed.returncode == 0, completed.stderr
        assert await asyncio.wait_for(handle.result(), 20) == "ok"
        await wait_for_events(handle, "ActivityCompleted", 1)
    finally:
        worker.kill()


async def test_sigterm_stops_a_worker_whose_code_will_not_return(
    server: ServerProcess, client: Any, tmp_path: Path
) -> None:
    """A sync activity blocked for 90 s and workflow code stuck in a loop: SIGTERM drains
    (the activity is given back as interrupted) and the process exits instead of waiting for
    those threads, which Python cannot stop."""
    log = tmp_path / "runs.log"
    worker = start_worker(server.address, MODULE, "stuck", CHRONICLE_TEST_LOG=str(log))
    try:
        await client.start(aw.runs_blocking, 90.0, id="blocked-sync", task_queue="stuck")
        await client.start(aw.spins, id="spinning", task_queue="stuck")
        await wait_for_lines(log, "blocks started", 1)
        await wait_for_lines(log, "spins", 1)
        await asyncio.sleep(3)  # the spinning task's deadlock timeout (2 s) has passed
        assert worker.terminate(timeout=30) == 0
        assert "not waiting for threads still in user code" in worker.log()
    finally:
        worker.kill()
