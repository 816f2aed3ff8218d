"""A lost answer under SIGKILL: the server dies between the commit of a completion that
started the run's next workflow task for its worker and the reply carrying that task. The
worker (alive, reconnected to the restarted server) releases the task it never got, so the
run goes on long before the task's workflow-task timeout."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from chronicle import Client
from chronicle.history import events as ev
from chronicle.server import crash_points
from tests.e2e import workflows as wf
from tests.e2e.processes import ServerProcess, free_port, start_worker
from tests.e2e.test_crash import assert_each_step_recorded_once

MODULE = "tests.e2e.workflows"


async def test_server_killed_between_an_eager_commit_and_its_reply(
    database_url: str, tmp_path: Path
) -> None:
    server = ServerProcess(database_url, free_port())
    server.env[crash_points.ENV] = crash_points.EAGER_WORKFLOW_TASK_COMMITTED
    server.start_listening()
    worker = start_worker(server.address, MODULE, "lost", CHRONICLE_TEST_LOG=str(tmp_path / "l"))
    client = await Client.connect(server.address)
    try:
        # The first task's completion records the inline activity's result and starts the
        # next task for the worker: the server kills itself once that has committed.
        handle = await client.start(
            wf.add_steps,
            0,
            3,
            id="lost-answer",
            task_queue="lost",
            task_timeout=timedelta(seconds=60),  # far beyond the wait below
        )
        assert server.process is not None
        await asyncio.to_thread(server.process.wait, 30)
        assert "crash point reached" in server.log()
        del server.env[crash_points.ENV]
        server.start_listening()
        assert await asyncio.wait_for(handle.result(), 20) == 3
        history = await handle.history()
        assert_each_step_recorded_once(history, steps=3)
        # the task in the lost answer: started for the worker by the completion's request,
        # then timed out at once on the worker's release; retried and answered once
        [lost] = [
            e
            for e in history
            if isinstance(e.attributes, ev.WorkflowTaskStarted) and e.attributes.request_id
            if e.id + 1 < len(history) and history[e.id].type == "WorkflowTaskTimedOut"
        ]
        assert lost.attributes.identity
        [timed_out] = [e for e in history if e.type == "WorkflowTaskTimedOut"]
        assert timed_out.attributes.started_event_id == lost.id
        assert worker.alive, f"the worker should ride out the restart:\n{worker.log()}"
    finally:
        await client.close()
        worker.kill()
        server.kill()
