"""Inline activities at the RPC level: results recorded with the workflow-task completion, the
next workflow task handed back in its response, still-running ones started for the worker with
an activity-id token, and bad inline lists refused with nothing written."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import grpc
import pytest

from chronicle.history import commands
from chronicle.history.values import RetryPolicy
from chronicle.protos.v1 import service_pb2 as pb
from tests.server.conftest import (
    attributes,
    command_protos,
    event_types,
    payload,
    payload_proto,
    start_request,
)

FAST = RetryPolicy(initial_interval=timedelta(milliseconds=10))


def _schedule(activity_id: str, seq: int = 1, **extra: object) -> commands.ScheduleActivity:
    return commands.ScheduleActivity(
        seq=seq, activity_id=activity_id, activity_type="act", retry_policy=FAST, **extra
    )


def _token(workflow_id: str, run_id: str, activity_id: str) -> bytes:
    fields = {"t": "act", "ns": "default", "wid": workflow_id, "rid": run_id}
    return json.dumps({**fields, "aid": activity_id, "attempt": 1}).encode()


async def _first_task(stub, workflow_id: str):
    await stub.StartWorkflow(start_request(workflow_id))
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity="w1"), timeout=10
    )
    assert task.task_token
    return task


async def _history(stub, workflow_id: str):
    response = await stub.GetWorkflowHistory(pb.GetWorkflowHistoryRequest(workflow_id=workflow_id))
    return list(response.events)


async def test_an_inline_result_is_recorded_with_the_completion_and_the_next_task_returned(
    stub,
) -> None:
    task = await _first_task(stub, "inline")
    response = await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(_schedule("a")),
            inline_results=[pb.InlineActivityResult(activity_id="a", result=payload_proto(7))],
            eager_workflow_task=True,
        )
    )
    next_task = response.workflow_task
    assert next_task.task_token
    # only the events after the task the worker just completed
    assert event_types(next_task.events) == [
        "WorkflowTaskCompleted",
        "ActivityScheduled",
        "ActivityCompleted",
        "WorkflowTaskScheduled",
        "WorkflowTaskStarted",
    ]
    completed = attributes(next_task.events[2])
    assert (completed.scheduled_event_id, completed.attempt) == (next_task.events[1].event_id, 1)
    assert completed.result == payload(7)
    # nothing was queued for the activity: no task row, no pending activity left
    polled = await stub.PollActivityTask(
        pb.PollActivityTaskRequest(task_queue="q", identity="other"), timeout=0.5
    )
    assert not polled.task_token
    described = await stub.DescribeWorkflow(pb.DescribeWorkflowRequest(workflow_id="inline"))
    assert not described.pending_activities


async def test_a_still_running_inline_activity_is_started_for_the_worker(stub) -> None:
    task = await _first_task(stub, "inline-running")
    run_id = task.workflow_execution.run_id
    response = await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(_schedule("a")),
            inline_started_activity_ids=["a"],
            eager_workflow_task=True,
        )
    )
    assert not response.workflow_task.task_token  # nothing new for the workflow yet
    polled = await stub.PollActivityTask(
        pb.PollActivityTaskRequest(task_queue="q", identity="other"), timeout=0.5
    )
    assert not polled.task_token  # started for w1, not queued
    token = _token("inline-running", run_id, "a")
    beat = await stub.HeartbeatActivityTask(
        pb.HeartbeatActivityTaskRequest(task_token=token, details=[payload_proto("half")])
    )
    assert not beat.cancel_requested
    done = await stub.CompleteActivityTask(
        pb.CompleteActivityTaskRequest(
            task_token=token, result=payload_proto(3), identity="w1", eager_workflow_task=True
        )
    )
    assert event_types(done.workflow_task.events)[-3:] == [
        "ActivityCompleted",
        "WorkflowTaskScheduled",
        "WorkflowTaskStarted",
    ]
    with pytest.raises(grpc.aio.AioRpcError) as info:  # exactly once
        await stub.CompleteActivityTask(pb.CompleteActivityTaskRequest(task_token=token))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("cmds", "results", "started", "message"),
    [
        ([_schedule("a")], ["b"], [], "'b' is not scheduled"),
        ([_schedule("a")], ["a"], ["a"], "listed twice"),
        (
            [_schedule("a", task_queue="elsewhere")],
            ["a"],
            [],
            "not the workflow's own",
        ),
        (
            [_schedule("a"), commands.RequestCancelActivity(seq=1)],
            [],
            ["a"],
            "'a' is not scheduled",
        ),
        (
            [_schedule("a"), commands.CompleteWorkflow(result=payload(1))],
            ["a"],
            [],
            "cannot accompany a command that closes",
        ),
        ([_schedule("a", 1), _schedule("a", 2)], ["a"], [], "two activities with that id"),
    ],
)
async def test_bad_inline_lists_are_refused_and_change_nothing(
    stub, cmds, results, started, message
) -> None:
    task = await _first_task(stub, "inline-bad")
    before = await _history(stub, "inline-bad")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CompleteWorkflowTask(
            pb.CompleteWorkflowTaskRequest(
                task_token=task.task_token,
                identity="w1",
                commands=command_protos(*cmds),
                inline_results=[
                    pb.InlineActivityResult(activity_id=a, result=payload_proto(1)) for a in results
                ],
                inline_started_activity_ids=started,
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()
    assert len(await _history(stub, "inline-bad")) == len(before)


async def test_a_malformed_inline_token_is_invalid(stub) -> None:
    token = json.dumps({"t": "act", "ns": "default", "wid": "w", "rid": "r", "aid": 5}).encode()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CompleteActivityTask(pb.CompleteActivityTaskRequest(task_token=token))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "task_token" in info.value.details()


async def test_an_oversized_inline_result_is_refused(server, stub) -> None:
    task = await _first_task(stub, "inline-big")
    big = payload_proto("x" * (server.config.max_payload_bytes + 10))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CompleteWorkflowTask(
            pb.CompleteWorkflowTaskRequest(
                task_token=task.task_token,
                identity="w1",
                commands=command_protos(_schedule("a")),
                inline_results=[pb.InlineActivityResult(activity_id="a", result=big)],
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inline_results[0]" in info.value.details()


async def test_an_inline_id_already_pending_is_refused(stub) -> None:
    """An inline token names its activity by id: the id must not name an older pending one."""
    task = await _first_task(stub, "inline-taken")
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(
                _schedule("a", 1), commands.StartTimer(seq=1, duration=timedelta(milliseconds=1))
            ),
        )
    )
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity="w1"), timeout=10
    )
    assert task.task_token
    before = await _history(stub, "inline-taken")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CompleteWorkflowTask(
            pb.CompleteWorkflowTaskRequest(
                task_token=task.task_token,
                identity="w1",
                commands=command_protos(_schedule("a", 2)),
                inline_started_activity_ids=["a"],
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "already pending" in info.value.details()
    assert len(await _history(stub, "inline-taken")) == len(before)


async def test_an_inline_token_used_before_its_schedule_is_recorded_waits_for_it(stub) -> None:
    """An async completer may get the token while the workflow-task completion that records the
    activity is still in flight: its report waits for that completion instead of failing."""
    task = await _first_task(stub, "inline-early")
    token = _token("inline-early", task.workflow_execution.run_id, "a")
    early = asyncio.ensure_future(
        stub.CompleteActivityTask(
            pb.CompleteActivityTaskRequest(task_token=token, result=payload_proto(42))
        )
    )
    await asyncio.sleep(0.2)
    assert not early.done()  # waiting: the workflow task that schedules "a" is in flight
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(_schedule("a")),
            inline_started_activity_ids=["a"],
        )
    )
    await asyncio.wait_for(early, 10)
    [completed] = [
        e for e in await _history(stub, "inline-early") if e.event_type == "ActivityCompleted"
    ]
    assert attributes(completed).result == payload(42)
