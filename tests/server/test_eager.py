"""Eager dispatch (the next task handed back in the completing RPC's response) and lost workers
(their started tasks time out as soon as their session stream breaks)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest

from chronicle.history import commands
from chronicle.history.values import RetryPolicy
from chronicle.protos.v1 import service_pb2 as pb
from tests.server.conftest import (
    command_protos,
    event_types,
    payload,
    payload_proto,
    start_request,
)

FAST = RetryPolicy(initial_interval=timedelta(milliseconds=10))


async def _poll_wft(stub, identity: str = "w1"):
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity=identity), timeout=10
    )
    assert task.task_token, "expected a workflow task"
    return task


async def _poll_activity(stub, timeout: float = 10):
    return await stub.PollActivityTask(
        pb.PollActivityTaskRequest(task_queue="q", identity="other"), timeout=timeout
    )


async def _history(stub, workflow_id: str) -> list[str]:
    response = await stub.GetWorkflowHistory(pb.GetWorkflowHistoryRequest(workflow_id=workflow_id))
    return event_types(response.events)


async def _schedule(stub, workflow_id: str, types: list[str], identity: str = "w1"):
    await stub.StartWorkflow(start_request(workflow_id))
    task = await _poll_wft(stub, identity)
    return await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity=identity,
            commands=command_protos(
                commands.ScheduleActivity(
                    seq=1, activity_id="a", activity_type="act", retry_policy=FAST
                )
            ),
            max_eager_activities=1,
            eager_activity_types=types,
        )
    )


async def test_eager_activity_then_eager_workflow_task(stub) -> None:
    response = await _schedule(stub, "eager", ["act"])
    [activity] = response.activity_tasks
    assert (activity.activity_type, activity.attempt) == ("act", 1)
    assert not (await _poll_activity(stub, timeout=0.5)).task_token  # it was not queued
    completed = await stub.CompleteActivityTask(
        pb.CompleteActivityTaskRequest(
            task_token=activity.task_token,
            result=payload_proto(1),
            identity="w1",
            eager_workflow_task=True,
        )
    )
    task = completed.workflow_task
    assert task.task_token
    # sticky: only the events after the worker's previous task
    assert event_types(task.events) == [
        "WorkflowTaskCompleted",
        "ActivityScheduled",
        "ActivityCompleted",
        "WorkflowTaskScheduled",
        "WorkflowTaskStarted",
    ]
    with pytest.raises(grpc.aio.AioRpcError) as info:  # exactly once
        await stub.CompleteActivityTask(
            pb.CompleteActivityTaskRequest(task_token=activity.task_token, identity="w1")
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(commands.CompleteWorkflow(result=payload(1))),
        )
    )
    assert (await _history(stub, "eager"))[-1] == "WorkflowCompleted"


async def test_no_eager_activity_of_a_type_the_worker_does_not_serve(stub) -> None:
    response = await _schedule(stub, "eager-other-type", ["something-else"])
    assert not response.activity_tasks
    polled = await _poll_activity(stub)
    assert polled.activity_type == "act"


async def test_no_eager_workflow_task_for_a_worker_the_run_is_not_sticky_to(stub) -> None:
    await _schedule(stub, "eager-not-sticky", [])
    activity = await _poll_activity(stub)
    completed = await stub.CompleteActivityTask(
        pb.CompleteActivityTaskRequest(
            task_token=activity.task_token, identity="other", eager_workflow_task=True
        )
    )
    assert not completed.workflow_task.task_token
    task = await _poll_wft(stub, "w1")
    assert event_types(task.events)[-1] == "WorkflowTaskStarted"


async def test_lost_worker_session_times_out_its_activity_at_once(stub) -> None:
    session = stub.WorkerSession(pb.WorkerSessionRequest(identity="w1"))
    await session.read()  # established
    response = await _schedule(stub, "lost", ["act"])
    [activity] = response.activity_tasks  # started for w1, start-to-close 5 minutes
    session.cancel()
    retried = await _poll_activity(stub, timeout=10)
    assert (retried.activity_type, retried.attempt) == ("act", 2)
    with pytest.raises(grpc.aio.AioRpcError) as info:  # the lost attempt's answer is stale
        await stub.CompleteActivityTask(
            pb.CompleteActivityTaskRequest(task_token=activity.task_token, identity="w1")
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_task_started_for_a_worker_just_after_it_was_lost_times_out_soon(stub) -> None:
    """An RPC of a lost worker still in flight when its session broke can commit an eager start
    after the first expiry pass; the second pass (lost_worker_settle later) catches it, long
    before its 5-minute start-to-close."""
    session = stub.WorkerSession(pb.WorkerSessionRequest(identity="ghost"))
    await session.read()  # established
    session.cancel()
    await asyncio.sleep(0.5)  # the first pass has run, with nothing of ghost's to expire
    response = await _schedule(stub, "late-start", ["act"], identity="ghost")
    [activity] = response.activity_tasks  # started for the lost worker after that pass
    retried = await _poll_activity(stub, timeout=10)
    assert (retried.activity_type, retried.attempt) == ("act", 2)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CompleteActivityTask(
            pb.CompleteActivityTaskRequest(task_token=activity.task_token, identity="ghost")
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
