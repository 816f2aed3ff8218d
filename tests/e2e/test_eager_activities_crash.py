"""A lost answer under SIGKILL that carried only eager activities: the server dies between the
commit of a workflow-task completion that started the activities it schedules for the
completing worker and the reply carrying their tasks (no workflow task rides on it). The
worker never got them, so it releases them once the restarted server refuses its retried
completion (docs/decisions.md §17): each goes back to its queue as attempt 1, uncounted, and
runs once, long before its start-to-close timeout."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path

from chronicle import Client
from chronicle.server import crash_points
from tests.e2e import eager_workflows as ew
from tests.e2e.processes import ServerProcess, free_port, start_worker
from tests.e2e.test_activity_crash import read_lines

MODULE = "tests.e2e.eager_workflows"
VALUES = [10, 20, 30]


async def test_server_killed_between_an_eager_activities_commit_and_its_reply(
    database_url: str, tmp_path: Path
) -> None:
    """Start-to-close is 60 s and one attempt is allowed, the wait 20 s: an eager attempt left
    started would make the wait run out, one timed out or counted would fail the workflow."""
    server = ServerProcess(database_url, free_port())
    server.env[crash_points.ENV] = crash_points.EAGER_ACTIVITIES_COMMITTED
    server.start_listening()
    log = tmp_path / "executions.log"
    # No inline activities: the completion asks the server to start all three for the worker.
    worker = start_worker(
        server.address,
        MODULE,
        "eager-lost",
        "--inline-activity-budget",
        "0",
        CHRONICLE_TEST_LOG=str(log),
    )
    client = await Client.connect(server.address)
    try:
        handle = await client.start(
            ew.three_at_once,
            VALUES,
            id="eager-activities-lost",
            task_queue="eager-lost",
            task_timeout=timedelta(seconds=60),  # far beyond the wait below
        )
        assert server.process is not None
        await asyncio.to_thread(server.process.wait, 30)
        assert f"point='{crash_points.EAGER_ACTIVITIES_COMMITTED}'" in server.log()
        assert read_lines(log) == [], "the activities ran before the answer carrying them"
        del server.env[crash_points.ENV]
        server.start_listening()
        assert await asyncio.wait_for(handle.result(), 20) == [v + 1 for v in VALUES]

        history = await handle.history()
        assert [e.id for e in history] == list(range(1, len(history) + 1))
        scheduled = [e for e in history if e.type == "ActivityScheduled"]
        assert len(scheduled) == len(VALUES)
        outcomes = [e for e in history if e.type.startswith("Activity") and e not in scheduled]
        assert [e.type for e in outcomes] == ["ActivityCompleted"] * len(VALUES)
        per_schedule = Counter(e.attributes.scheduled_event_id for e in outcomes)
        assert per_schedule == Counter({e.id: 1 for e in scheduled})
        # put back uncounted: the attempt the lost answer carried is the one that ran
        assert {e.attributes.attempt for e in outcomes} == {1}
        assert sum(e.type == "WorkflowCompleted" for e in history) == 1
        # each activity ran exactly once: the eagerly started attempt never reached the worker
        assert sorted(read_lines(log)) == [f"counted_increment {v} attempt 1" for v in VALUES]
        # the restarted server put back what the worker released: three attempts, no task
        [released] = [line for line in server.log().splitlines() if "are released" in line]
        assert "workflow_task=False activities=3" in released
        assert worker.alive, f"the worker should ride out the restart:\n{worker.log()}"
    finally:
        await client.close()
        worker.kill()
        server.kill()
