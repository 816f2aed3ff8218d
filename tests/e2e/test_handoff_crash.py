"""Sync match under SIGKILL: a run's first workflow task, handed to a waiting worker in the
start's own commit, is retried promptly by another worker when the first one dies holding it."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.e2e import activity_workflows as aw
from tests.e2e.processes import ServerProcess, start_worker
from tests.e2e.test_activity_crash import wait_for_lines

MODULE = "tests.e2e.activity_workflows"


async def test_a_handed_first_task_whose_worker_is_killed_is_retried_at_once(
    server: ServerProcess, client: Any, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    first = start_worker(server.address, MODULE, "handoff", CHRONICLE_TEST_LOG=str(log))
    second = None
    try:
        probe = await client.start(aw.uses_local, 0, id="handoff-probe", task_queue="handoff")
        assert await asyncio.wait_for(probe.result(), 30) == 1  # the worker polls the queue
        await asyncio.sleep(0.3)  # and its polls wait again
        handle = await client.start(
            aw.uses_local,
            4,
            id="handoff-crash",
            task_queue="handoff",
            task_timeout=timedelta(seconds=120),  # far beyond the wait below
        )
        first_events = (await handle.history())[:3]
        assert [e.type for e in first_events] == [
            "WorkflowStarted",
            "WorkflowTaskScheduled",
            "WorkflowTaskStarted",
        ]
        assert first_events[1].time == first_events[2].time  # started in the start's commit
        await wait_for_lines(log, "slow_local 4", 1)
        first.kill()  # inside the handed task's local activity
        second = start_worker(server.address, MODULE, "handoff", CHRONICLE_TEST_LOG=str(log))
        # long before the 120 s task timeout: the dropped session times the task out at once
        assert await asyncio.wait_for(handle.result(), 30) == 41
        history = await handle.history()
        assert [e.id for e in history] == list(range(1, len(history) + 1))
        assert [e.type for e in history].count("WorkflowTaskTimedOut") == 1
        assert [e.type for e in history].count("MarkerRecorded") == 1
        assert [e.type for e in history].count("WorkflowCompleted") == 1
    finally:
        first.kill()
        if second is not None:
            second.kill()
