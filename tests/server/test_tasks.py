"""Exactly-once completion, activity retries and timeouts, workflow-task timeouts, timers."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

import grpc
import pytest

from chronicle.history import commands, wire
from chronicle.history.values import RetryPolicy
from chronicle.protos.v1 import common_pb2
from chronicle.protos.v1 import service_pb2 as pb
from chronicle.server.engine import activity_task
from chronicle.server.matching import poller
from tests.server.conftest import (
    attributes,
    command_protos,
    event_types,
    payload_proto,
    start_request,
)


async def _poll_wft(stub, identity: str = "w1", timeout: float = 10):
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity=identity), timeout=timeout
    )
    assert task.task_token, "expected a workflow task"
    return task


async def _poll_activity(stub, timeout: float = 10):
    task = await stub.PollActivityTask(
        pb.PollActivityTaskRequest(task_queue="q", identity="aw"), timeout=timeout
    )
    assert task.task_token, "expected an activity task"
    return task


async def _history(stub, workflow_id: str) -> list[str]:
    response = await stub.GetWorkflowHistory(pb.GetWorkflowHistoryRequest(workflow_id=workflow_id))
    return event_types(response.events)


async def _schedule(stub, workflow_id: str, **options) -> None:
    await stub.StartWorkflow(start_request(workflow_id))
    task = await _poll_wft(stub)
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(
                commands.ScheduleActivity(seq=1, activity_id="a", activity_type="act", **options)
            ),
        )
    )


async def test_duplicate_workflow_task_completion_is_rejected(stub) -> None:
    await stub.StartWorkflow(start_request("dup-wft"))
    task = await _poll_wft(stub)
    request = pb.CompleteWorkflowTaskRequest(
        task_token=task.task_token,
        identity="w1",
        commands=command_protos(commands.StartTimer(seq=1, duration=timedelta(hours=1))),
    )
    await stub.CompleteWorkflowTask(request)
    before = await _history(stub, "dup-wft")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CompleteWorkflowTask(request)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "workflow task not found" in info.value.details()
    assert await _history(stub, "dup-wft") == before
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.FailWorkflowTask(pb.FailWorkflowTaskRequest(task_token=task.task_token))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_duplicate_activity_completion_is_rejected(stub) -> None:
    await _schedule(stub, "dup-act")
    activity = await _poll_activity(stub)
    request = pb.CompleteActivityTaskRequest(
        task_token=activity.task_token, result=payload_proto(1)
    )
    await stub.CompleteActivityTask(request)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CompleteActivityTask(request)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "activity task not found" in info.value.details()
    assert (await _history(stub, "dup-act")).count("ActivityCompleted") == 1


async def test_retryable_failure_redispatches_then_non_retryable_fails(stub, db) -> None:
    policy = RetryPolicy(initial_interval=timedelta(milliseconds=300))
    await _schedule(stub, "retry-1", retry_policy=policy)
    activity = await _poll_activity(stub)
    assert activity.attempt == 1
    failed_at = time.monotonic()
    await stub.FailActivityTask(
        pb.FailActivityTaskRequest(
            task_token=activity.task_token,
            failure=common_pb2.Failure(message="boom", type="ValueError"),
        )
    )
    assert "ActivityFailed" not in await _history(stub, "retry-1")
    described = await stub.DescribeWorkflow(pb.DescribeWorkflowRequest(workflow_id="retry-1"))
    pending = described.pending_activities[0]
    assert (pending.state, pending.attempt) == ("backing_off", 2)
    assert pending.last_failure.message == "boom"

    activity = await _poll_activity(stub)
    assert activity.attempt == 2
    assert time.monotonic() - failed_at >= 0.25
    # The old attempt's token is stale now.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CompleteActivityTask(
            pb.CompleteActivityTaskRequest(
                task_token=json.dumps(
                    {
                        "t": "act",
                        "ns": "default",
                        "wid": "retry-1",
                        "rid": activity.workflow_execution.run_id,
                        "sched": 5,
                        "attempt": 1,
                    }
                ).encode()
            )
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    await stub.FailActivityTask(
        pb.FailActivityTaskRequest(
            task_token=activity.task_token,
            failure=common_pb2.Failure(message="fatal", type="ValueError", non_retryable=True),
        )
    )
    history = await stub.GetWorkflowHistory(pb.GetWorkflowHistoryRequest(workflow_id="retry-1"))
    failed = [e for e in history.events if e.event_type == "ActivityFailed"]
    assert len(failed) == 1
    assert attributes(failed[0]).attempt == 2
    assert attributes(failed[0]).failure.message == "fatal"
    assert event_types(history.events)[-1] == "WorkflowTaskScheduled"
    assert await db.fetchval("SELECT count(*) FROM activities") == 0


async def test_activity_start_to_close_timeout(stub) -> None:
    await _schedule(
        stub,
        "s2c-1",
        start_to_close_timeout=timedelta(milliseconds=300),
        retry_policy=RetryPolicy(maximum_attempts=1),
    )
    await _poll_activity(stub)
    task = await _poll_wft(stub)
    timed_out = [e for e in task.events if e.event_type == "ActivityTimedOut"]
    assert len(timed_out) == 1
    assert attributes(timed_out[0]).timeout_type == "start_to_close"


async def test_heartbeat_and_cancel_request(stub) -> None:
    await _schedule(stub, "hb-1", heartbeat_timeout=timedelta(seconds=5))
    activity = await _poll_activity(stub)
    beat = await stub.HeartbeatActivityTask(
        pb.HeartbeatActivityTaskRequest(task_token=activity.task_token, details=[payload_proto(50)])
    )
    assert not beat.cancel_requested
    await stub.SignalWorkflow(pb.SignalWorkflowRequest(workflow_id="hb-1", signal_name="stop"))
    task = await _poll_wft(stub)
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(commands.RequestCancelActivity(seq=1)),
        )
    )
    beat = await stub.HeartbeatActivityTask(
        pb.HeartbeatActivityTaskRequest(task_token=activity.task_token)
    )
    assert beat.cancel_requested
    described = await stub.DescribeWorkflow(pb.DescribeWorkflowRequest(workflow_id="hb-1"))
    assert described.pending_activities[0].state == "cancel_requested"
    assert wire.payloads_from_proto(described.pending_activities[0].heartbeat_details)
    await stub.FailActivityTask(
        pb.FailActivityTaskRequest(
            task_token=activity.task_token,
            failure=common_pb2.Failure(message="cancelled", kind="cancelled"),
        )
    )
    assert (await _history(stub, "hb-1"))[-2:] == ["ActivityCanceled", "WorkflowTaskScheduled"]


async def test_cancel_of_unstarted_activity_is_immediate(stub) -> None:
    await _schedule(stub, "cancel-early")
    await stub.SignalWorkflow(
        pb.SignalWorkflowRequest(workflow_id="cancel-early", signal_name="stop")
    )
    task = await _poll_wft(stub)
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(commands.RequestCancelActivity(seq=1)),
        )
    )
    history = await _history(stub, "cancel-early")
    assert history[-3:] == ["ActivityCancelRequested", "ActivityCanceled", "WorkflowTaskScheduled"]
    empty = await stub.PollActivityTask(pb.PollActivityTaskRequest(task_queue="q"), timeout=1.5)
    assert not empty.task_token


async def test_workflow_task_timeout_redispatches(stub) -> None:
    await stub.StartWorkflow(
        start_request(
            "wft-timeout", workflow_task_timeout=wire.duration_to_proto(timedelta(seconds=1))
        )
    )
    first = await _poll_wft(stub, identity="dies")
    started = time.monotonic()
    second = await _poll_wft(stub, identity="w2")  # the first worker never answers
    assert time.monotonic() - started >= 0.8
    assert second.attempt == 2
    assert "WorkflowTaskTimedOut" in event_types(second.events)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CompleteWorkflowTask(
            pb.CompleteWorkflowTaskRequest(task_token=first.task_token, identity="dies")
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=second.task_token,
            identity="w2",
            commands=command_protos(commands.CompleteWorkflow()),
        )
    )


async def test_failed_workflow_task_is_retried_and_described(stub) -> None:
    await stub.StartWorkflow(start_request("wft-fail"))
    task = await _poll_wft(stub)
    await stub.FailWorkflowTask(
        pb.FailWorkflowTaskRequest(
            task_token=task.task_token,
            cause="nondeterminism",
            identity="w1",
            failure=common_pb2.Failure(message="boom at line 3"),
        )
    )
    described = await stub.DescribeWorkflow(pb.DescribeWorkflowRequest(workflow_id="wft-fail"))
    assert described.last_workflow_task_failure.message == "boom at line 3"
    task = await _poll_wft(stub)  # retried after a 1 s back-off
    assert task.attempt == 2
    described = await stub.DescribeWorkflow(pb.DescribeWorkflowRequest(workflow_id="wft-fail"))
    assert described.workflow_task_attempt == 2
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(task_token=task.task_token, identity="w1")
    )
    described = await stub.DescribeWorkflow(pb.DescribeWorkflowRequest(workflow_id="wft-fail"))
    assert not described.HasField("last_workflow_task_failure")


async def test_durable_timer_fires_on_time(stub) -> None:
    await stub.StartWorkflow(start_request("timer-1"))
    task = await _poll_wft(stub)
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(commands.StartTimer(seq=1, duration=timedelta(seconds=1))),
        )
    )
    task = await _poll_wft(stub)
    fired = next(e for e in task.events if e.event_type == "TimerFired")
    started = next(e for e in task.events if e.event_type == "TimerStarted")
    lateness = (fired.time.ToDatetime() - started.time.ToDatetime()) - timedelta(seconds=1)
    assert timedelta(0) <= lateness < timedelta(milliseconds=200)


async def test_timer_cancelled_in_the_same_completion(stub, db) -> None:
    await stub.StartWorkflow(start_request("timer-2"))
    task = await _poll_wft(stub)
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(
                commands.StartTimer(seq=1, duration=timedelta(seconds=30)),
                commands.CancelTimer(seq=1),
            ),
        )
    )
    assert (await _history(stub, "timer-2"))[-2:] == ["TimerStarted", "TimerCanceled"]
    assert await db.fetchval("SELECT count(*) FROM timers WHERE kind = 'user_timer'") == 0


async def test_an_activity_poll_cancelled_after_its_dispatch_puts_the_task_back(
    server, stub, db, monkeypatch
) -> None:
    """The dispatch committed the attempt's start, and the poll is cancelled before the task
    reaches the worker: the task is queued again at once, as attempt 1 (it never ran),
    instead of waiting for its start-to-close timeout."""
    await _schedule(stub, "unclaimed-act", start_to_close_timeout=timedelta(minutes=5))
    real_dispatch = activity_task.dispatch

    async def dispatched_then_cancelled(*args: Any, **kwargs: Any) -> Any:
        grant = await real_dispatch(*args, **kwargs)
        assert grant is not None
        raise asyncio.CancelledError

    monkeypatch.setattr(activity_task, "dispatch", dispatched_then_cancelled)
    with pytest.raises(asyncio.CancelledError):
        await poller.poll_activity_task(server.services, "default", "q", "aw", 5.0)
    monkeypatch.undo()
    task = await _poll_activity(stub, timeout=5)
    assert task.attempt == 1
    timers = await db.fetchval(
        "SELECT count(*) FROM timers WHERE workflow_id = 'unclaimed-act' "
        "AND kind = 'activity_start_to_close'"
    )
    assert timers == 1  # the second dispatch's; the first one's was disarmed


async def test_polls_already_waiting_obey_a_rate_limit_set_meanwhile(server, stub) -> None:
    """Three polls wait on an unlimited queue; then a worker sets a limit of one task per 5 s.
    When three tasks arrive, the waiting polls dispatch under that limit: one of them gets a
    task before their 4 s wait ends, not all three."""
    services = server.services
    polls = [
        asyncio.ensure_future(
            poller.poll_activity_task(services, "default", "q", f"waiting-{i}", 4.0)
        )
        for i in range(3)
    ]
    await asyncio.sleep(0.3)
    empty = await stub.PollActivityTask(
        pb.PollActivityTaskRequest(
            task_queue="q", identity="limiter", max_activities_per_second=0.2
        ),
        timeout=2,
    )
    assert not empty.task_token  # no task yet: it only set the limit (and used its slot)
    for i in range(3):
        await _schedule(stub, f"limited-{i}")
    granted = [g for g in await asyncio.gather(*polls) if g is not None]
    assert len(granted) <= 1
