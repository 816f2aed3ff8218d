"""The transition write deletes exactly the task, timer and activity rows it names (or, when the
run closes, every row of that run), never another run's rows."""

from __future__ import annotations

from datetime import timedelta

from chronicle.history import commands
from chronicle.protos.v1 import service_pb2 as pb
from tests.server.conftest import command_protos, payload_proto, start_request

_ROWS = """
SELECT (SELECT count(*) FROM tasks WHERE workflow_id = $1 AND kind = 'activity') AS tasks,
       (SELECT count(*) FROM timers WHERE workflow_id = $1) AS timers,
       (SELECT count(*) FROM activities WHERE workflow_id = $1) AS activities"""


async def _fan_out(stub, workflow_id: str, width: int) -> None:
    """Start a run whose first workflow task schedules ``width`` activities and a timer."""
    await stub.StartWorkflow(start_request(workflow_id))
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity="w1"), timeout=10
    )
    assert task.workflow_execution.workflow_id == workflow_id
    scheduled = [
        commands.ScheduleActivity(
            seq=i,
            activity_id=str(i),
            activity_type="act",
            schedule_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(minutes=1),
        )
        for i in range(1, width + 1)
    ]
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(
                *scheduled, commands.StartTimer(seq=width + 1, duration=timedelta(minutes=5))
            ),
        )
    )


async def test_completion_deletes_only_its_own_rows(stub, db) -> None:
    await _fan_out(stub, "rows-a", 3)
    await _fan_out(stub, "rows-b", 3)
    # each activity: a task row, a schedule-to-close timer and an activities row; one user timer
    assert tuple(await db.fetchrow(_ROWS, "rows-a")) == (3, 4, 3)

    activity = await stub.PollActivityTask(
        pb.PollActivityTaskRequest(task_queue="q", identity="aw"), timeout=10
    )
    assert activity.workflow_execution.workflow_id == "rows-a"
    # started: its task row is gone; start-to-close and heartbeat timers joined its
    # schedule-to-close timer
    assert tuple(await db.fetchrow(_ROWS, "rows-a")) == (2, 6, 3)
    # a heartbeat replaces the heartbeat timer only (same activity, other kinds stay)
    await stub.HeartbeatActivityTask(
        pb.HeartbeatActivityTaskRequest(task_token=activity.task_token, identity="aw")
    )
    kinds = await db.fetch(
        "SELECT t.kind FROM timers t JOIN activities a USING (workflow_id, run_id) "
        "WHERE t.workflow_id = 'rows-a' AND a.state = 'started' "
        "AND t.ref_id = a.scheduled_event_id ORDER BY t.kind"
    )
    assert [r["kind"] for r in kinds] == [
        "activity_heartbeat",
        "activity_schedule_to_close",
        "activity_start_to_close",
    ]
    await stub.CompleteActivityTask(
        pb.CompleteActivityTaskRequest(
            task_token=activity.task_token, result=payload_proto(1), identity="aw"
        )
    )
    # its three timers and its activities row are deleted, nothing else
    assert tuple(await db.fetchrow(_ROWS, "rows-a")) == (2, 3, 2)
    assert tuple(await db.fetchrow(_ROWS, "rows-b")) == (3, 4, 3)


async def test_closing_deletes_every_row_of_the_run_only(stub, db) -> None:
    await _fan_out(stub, "close-a", 3)
    await _fan_out(stub, "close-b", 2)
    await stub.TerminateWorkflow(pb.TerminateWorkflowRequest(workflow_id="close-a", reason="x"))
    assert tuple(await db.fetchrow(_ROWS, "close-a")) == (0, 0, 0)
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE workflow_id = 'close-a'") == 0
    assert tuple(await db.fetchrow(_ROWS, "close-b")) == (2, 3, 2)
