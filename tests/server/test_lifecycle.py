"""A full workflow lifecycle driven by hand-written worker calls over real gRPC."""

from __future__ import annotations

import json
from datetime import timedelta

from chronicle.history import codec, commands, fold, wire
from chronicle.history.state import RunStatus
from chronicle.protos.v1 import service_pb2 as pb
from tests.server.conftest import (
    attributes,
    command_protos,
    event_types,
    payload,
    payload_proto,
    start_request,
)


async def _poll_wft(stub, identity: str = "w1", queue: str = "q") -> pb.PollWorkflowTaskResponse:
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue=queue, identity=identity), timeout=10
    )
    assert task.task_token, "expected a workflow task"
    return task


async def _poll_activity(stub, queue: str = "q") -> pb.PollActivityTaskResponse:
    task = await stub.PollActivityTask(
        pb.PollActivityTaskRequest(task_queue=queue, identity="aw"), timeout=10
    )
    assert task.task_token, "expected an activity task"
    return task


async def test_full_lifecycle(stub, db) -> None:
    started = await stub.StartWorkflow(start_request("order-1", input=[payload_proto("o-1")]))
    run_id = started.run_id

    task = await _poll_wft(stub)
    assert task.workflow_type == "wf"
    assert task.workflow_execution.run_id == run_id
    assert task.attempt == 1
    assert event_types(task.events) == [
        "WorkflowStarted",
        "WorkflowTaskScheduled",
        "WorkflowTaskStarted",
    ]
    first = attributes(task.events[0])
    assert first.input == (payload("o-1"),)
    assert first.random_seed > 0

    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(
                commands.ScheduleActivity(
                    seq=1,
                    activity_id="a1",
                    activity_type="charge",
                    input=(payload(12),),
                    start_to_close_timeout=timedelta(seconds=30),
                )
            ),
        )
    )

    activity = await _poll_activity(stub)
    assert activity.activity_type == "charge"
    assert activity.attempt == 1
    assert wire.payloads_from_proto(activity.input) == (payload(12),)
    assert activity.start_to_close_timeout.ToTimedelta() == timedelta(seconds=30)
    await stub.CompleteActivityTask(
        pb.CompleteActivityTaskRequest(
            task_token=activity.task_token, result=payload_proto("receipt"), identity="aw"
        )
    )

    # The same worker is sticky: it gets only the events after its last WorkflowTaskStarted.
    task = await _poll_wft(stub)
    assert event_types(task.events) == [
        "WorkflowTaskCompleted",
        "ActivityScheduled",
        "ActivityCompleted",
        "WorkflowTaskScheduled",
        "WorkflowTaskStarted",
    ]
    assert attributes(task.events[2]).result == payload("receipt")

    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(commands.CompleteWorkflow(result=payload("done"))),
        )
    )

    result = await stub.GetWorkflowResult(
        pb.GetWorkflowResultRequest(
            workflow_id="order-1", wait=wire.duration_to_proto(timedelta(seconds=5))
        ),
        timeout=10,
    )
    assert result.closed
    assert result.status == "completed"
    assert result.run_id == run_id
    assert wire.payload_from_proto(result.result) == payload("done")

    history = await stub.GetWorkflowHistory(pb.GetWorkflowHistoryRequest(workflow_id="order-1"))
    assert history.closed
    ids = [e.event_id for e in history.events]
    assert ids == list(range(1, len(ids) + 1))
    assert event_types(history.events)[-1] == "WorkflowCompleted"

    # The stored snapshot is exactly the fold of the stored history.
    events = wire.events_from_proto(history.events)
    row = await db.fetchrow(
        "SELECT state::text AS state, status, next_event_id FROM executions"
        " WHERE workflow_id = 'order-1'"
    )
    assert fold(events) == codec.state_from_json(row["state"])
    assert row["status"] == RunStatus.COMPLETED.value
    assert row["next_event_id"] == len(ids) + 1
    # Nothing is left behind for a closed run.
    for table in ("tasks", "timers", "activities"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0
    current = await db.fetchrow(
        "SELECT status FROM current_executions WHERE workflow_id = $1", "order-1"
    )
    assert current["status"] == "completed"

    described = await stub.DescribeWorkflow(pb.DescribeWorkflowRequest(workflow_id="order-1"))
    assert described.info.status == "completed"
    assert described.info.history_length == len(ids)

    listed = await stub.ListWorkflows(
        pb.ListWorkflowsRequest(query="status = 'completed' AND type = 'wf'")
    )
    assert [e.workflow_id for e in listed.executions] == ["order-1"]


async def test_non_sticky_worker_gets_full_history(stub) -> None:
    await stub.StartWorkflow(start_request("full-1"))
    task = await _poll_wft(stub, identity="w1")
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(
                commands.StartTimer(seq=1, duration=timedelta(milliseconds=200))
            ),
        )
    )
    # Another worker takes the next task once the sticky timeout (1 s in tests) passed.
    task = await _poll_wft(stub, identity="w2")
    assert next(e.event_id for e in task.events) == 1
    assert "TimerFired" in event_types(task.events)


async def test_signal_with_start_and_signal(stub) -> None:
    await stub.StartWorkflow(
        start_request("sig-1", signal_name="go", signal_input=[payload_proto(1)])
    )
    task = await _poll_wft(stub)
    assert event_types(task.events) == [
        "WorkflowStarted",
        "SignalReceived",
        "WorkflowTaskScheduled",
        "WorkflowTaskStarted",
    ]
    # A signal while the task is started makes a new task due after completion.
    await stub.SignalWorkflow(
        pb.SignalWorkflowRequest(workflow_id="sig-1", signal_name="more", input=[payload_proto(2)])
    )
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(task_token=task.task_token, identity="w1")
    )
    task = await _poll_wft(stub)
    assert "SignalReceived" in event_types(task.events)
    # Completing with a close command while unseen events exist fails the task instead.
    await stub.SignalWorkflow(pb.SignalWorkflowRequest(workflow_id="sig-1", signal_name="late"))
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(commands.CompleteWorkflow()),
        )
    )
    task = await _poll_wft(stub)
    types = event_types(task.events)
    assert types[0] == "WorkflowStarted"  # stickiness dropped: full history
    failed = [e for e in task.events if e.event_type == "WorkflowTaskFailed"]
    assert json.loads(failed[-1].attributes)["cause"] == "unhandled_events"
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(commands.CompleteWorkflow()),
        )
    )
    result = await stub.GetWorkflowResult(
        pb.GetWorkflowResultRequest(workflow_id="sig-1"), timeout=5
    )
    assert result.status == "completed"


async def test_continue_as_new_followed(stub) -> None:
    first = await stub.StartWorkflow(start_request("can-1"))
    task = await _poll_wft(stub)
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(commands.ContinueAsNew(input=(payload(2),))),
        )
    )
    task = await _poll_wft(stub)
    assert task.workflow_execution.run_id != first.run_id
    started = attributes(task.events[0])
    assert started.continued_from_run_id == first.run_id
    assert started.first_run_id == first.run_id
    assert started.input == (payload(2),)
    not_followed = await stub.GetWorkflowResult(
        pb.GetWorkflowResultRequest(workflow_id="can-1", run_id=first.run_id), timeout=5
    )
    assert not_followed.status == "continued_as_new"
    assert not_followed.next_run_id == task.workflow_execution.run_id
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(commands.CompleteWorkflow(result=payload("end"))),
        )
    )
    result = await stub.GetWorkflowResult(
        pb.GetWorkflowResultRequest(workflow_id="can-1", run_id=first.run_id, follow_runs=True),
        timeout=5,
    )
    assert result.status == "completed"
    assert result.run_id == task.workflow_execution.run_id


async def test_cancel_and_terminate(stub) -> None:
    await stub.StartWorkflow(start_request("cx-1"))
    await stub.RequestCancelWorkflow(pb.RequestCancelWorkflowRequest(workflow_id="cx-1"))
    task = await _poll_wft(stub)
    assert "WorkflowCancelRequested" in event_types(task.events)
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(commands.CancelWorkflow()),
        )
    )
    result = await stub.GetWorkflowResult(
        pb.GetWorkflowResultRequest(workflow_id="cx-1"), timeout=5
    )
    assert result.status == "canceled"
    assert result.failure.kind == "cancelled"

    await stub.StartWorkflow(start_request("tx-1"))
    await stub.TerminateWorkflow(pb.TerminateWorkflowRequest(workflow_id="tx-1", reason="bye"))
    result = await stub.GetWorkflowResult(
        pb.GetWorkflowResultRequest(workflow_id="tx-1"), timeout=5
    )
    assert result.status == "terminated"
    assert result.failure.message == "bye"
