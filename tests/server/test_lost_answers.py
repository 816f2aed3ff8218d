"""Lost answers (``lost_answers.py``): a worker that did not get the answer to a completion
that started its next workflow task releases that task, which then times out at once. The
release matches only the task that completion started for that worker."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from chronicle.history import commands
from chronicle.history import events as ev
from chronicle.history.values import RetryPolicy
from chronicle.protos.v1 import common_pb2, service_pb2_grpc
from chronicle.protos.v1 import service_pb2 as pb
from tests.sdk_io.helpers import eventually
from tests.server.conftest import (
    activity_command,
    attributes,
    command_protos,
    event_types,
    payload_proto,
    start_request,
)

Stub = service_pb2_grpc.WorkflowServiceStub
LONG = Duration(seconds=60)
"""The workflow-task timeout of these runs: far beyond any wait of these tests."""


async def _poll(stub: Stub, identity: str, timeout: float = 15.0) -> pb.PollWorkflowTaskResponse:
    """The next workflow task on queue ``q`` (polling again while polls end empty)."""
    deadline = time.monotonic() + timeout
    while True:
        task = await stub.PollWorkflowTask(
            pb.PollWorkflowTaskRequest(task_queue="q", identity=identity), timeout=10
        )
        if task.task_token:
            return task
        assert time.monotonic() < deadline, "no workflow task"


async def _history(stub: Stub, workflow_id: str) -> list[Any]:
    response = await stub.GetWorkflowHistory(pb.GetWorkflowHistoryRequest(workflow_id=workflow_id))
    return list(response.events)


def _release(
    execution: common_pb2.WorkflowExecution, identity: str, request_id: str
) -> pb.ReleaseEagerWorkflowTaskRequest:
    return pb.ReleaseEagerWorkflowTaskRequest(
        workflow_execution=execution, identity=identity, request_id=request_id
    )


def _completion(task: pb.PollWorkflowTaskResponse, request_id: str) -> Any:
    """Task ``task``'s completion without commands, asking for the next task eagerly."""
    return pb.CompleteWorkflowTaskRequest(
        task_token=task.task_token, identity="w1", eager_workflow_task=True, request_id=request_id
    )


async def _first_task_and_signal(stub: Stub, workflow_id: str) -> pb.PollWorkflowTaskResponse:
    """Start a run, take its first task as ``w1`` and signal it: completing that task makes
    the next one due (and starts it for ``w1`` when asked to, eagerly)."""
    await stub.StartWorkflow(start_request(workflow_id, workflow_task_timeout=LONG))
    task = await _poll(stub, "w1")
    await stub.SignalWorkflow(pb.SignalWorkflowRequest(workflow_id=workflow_id, signal_name="s"))
    return task


async def _eager_task(
    stub: Stub, workflow_id: str, request_id: str = "r1"
) -> tuple[common_pb2.WorkflowExecution, pb.PollWorkflowTaskResponse]:
    """A run whose second task a completion (``request_id``) started for ``w1``: its answer
    is the one the worker is taken to have lost."""
    task = await _first_task_and_signal(stub, workflow_id)
    answer = await stub.CompleteWorkflowTask(_completion(task, request_id))
    assert answer.workflow_task.task_token
    return task.workflow_execution, answer.workflow_task


async def _timeout_due_in(db: asyncpg.Connection, workflow_id: str) -> timedelta | None:
    """How long until the run's workflow-task timeout falls due (None: no armed timeout)."""
    due: timedelta | None = await db.fetchval(
        "SELECT fire_at - now() FROM timers WHERE workflow_id = $1 "
        "AND kind = 'workflow_task_timeout'",
        workflow_id,
    )
    return due


async def test_a_released_task_is_retried_at_once_and_a_late_answer_to_it_refused(
    stub: Stub,
) -> None:
    execution, lost = await _eager_task(stub, "released")
    started = attributes((await _history(stub, "released"))[-1])
    assert isinstance(started, ev.WorkflowTaskStarted)
    assert (started.identity, started.request_id) == ("w1", "r1")  # the completion's request

    released = await stub.ReleaseEagerWorkflowTask(_release(execution, "w1", "r1"))
    assert released.released
    retry = await _poll(stub, "w2")  # long before the task's 60 s timeout
    assert retry.attempt == 2
    assert event_types(await _history(stub, "released"))[-4:] == [
        "WorkflowTaskStarted",
        "WorkflowTaskTimedOut",
        "WorkflowTaskScheduled",
        "WorkflowTaskStarted",
    ]
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await stub.CompleteWorkflowTask(
            pb.CompleteWorkflowTaskRequest(task_token=lost.task_token, identity="w1")
        )
    assert late.value.code() == grpc.StatusCode.NOT_FOUND
    again = await stub.ReleaseEagerWorkflowTask(_release(execution, "w1", "r1"))
    assert not again.released  # idempotent: the retried task is not the released one


async def test_a_release_leaves_alone_every_task_that_completion_did_not_start(
    stub: Stub, db: asyncpg.Connection
) -> None:
    execution, _ = await _eager_task(stub, "others", request_id="r1")
    for identity, request_id in [("w2", "r1"), ("w1", "r2")]:  # another worker, another call
        answer = await stub.ReleaseEagerWorkflowTask(_release(execution, identity, request_id))
        assert not answer.released
    # a task the worker took by polling records no request id
    await stub.StartWorkflow(start_request("polled", workflow_task_timeout=LONG))
    polled = await _poll(stub, "w1")
    answer = await stub.ReleaseEagerWorkflowTask(_release(polled.workflow_execution, "w1", "r1"))
    assert not answer.released
    for workflow_id in ("others", "polled"):
        due = await _timeout_due_in(db, workflow_id)
        assert due is not None
        assert due > timedelta(seconds=30)
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # would name every polled task
        await stub.ReleaseEagerWorkflowTask(_release(execution, "w1", ""))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id" in (refused.value.details() or "")


async def test_the_task_an_activity_completion_started_is_released_too(stub: Stub) -> None:
    await stub.StartWorkflow(start_request("from-activity", workflow_task_timeout=LONG))
    task = await _poll(stub, "w1")
    schedule = commands.ScheduleActivity(
        seq=1,
        activity_id="a",
        activity_type="act",
        retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=10)),
    )
    answer = await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(schedule),
            max_eager_activities=1,
            eager_activity_types=["act"],
        )
    )
    [activity] = answer.activity_tasks
    completed = await stub.CompleteActivityTask(
        pb.CompleteActivityTaskRequest(
            task_token=activity.task_token,
            result=payload_proto(1),
            identity="w1",
            eager_workflow_task=True,
            request_id="ra",
        )
    )
    assert completed.workflow_task.task_token
    released = await stub.ReleaseEagerWorkflowTask(_release(task.workflow_execution, "w1", "ra"))
    assert released.released
    assert (await _poll(stub, "w2")).attempt == 2


async def test_a_release_waits_for_the_completion_still_written_on_this_server(
    stub: Stub, db: asyncpg.Connection, database_url: str
) -> None:
    """The release arrives while the completion it names is still being written (here it waits
    for a lock a test transaction holds; in life a cancelled call whose write goes on): it
    must see that write's outcome, or the task the write starts would be missed."""
    task = await _first_task_and_signal(stub, "in-flight")
    holder = await asyncpg.connect(database_url)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT FROM executions WHERE workflow_id = 'in-flight' FOR UPDATE")
        completing = asyncio.ensure_future(stub.CompleteWorkflowTask(_completion(task, "r1")))

        async def write_waits() -> bool | None:
            waiting = await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            )
            return True if waiting else None

        await eventually(write_waits, timeout=10, interval=0.01)
        releasing = asyncio.ensure_future(
            stub.ReleaseEagerWorkflowTask(_release(task.workflow_execution, "w1", "r1"))
        )
        await asyncio.sleep(0.5)
        assert not releasing.done()  # waits for the completion
        await transaction.rollback()
    finally:
        await holder.close()
    assert (await completing).workflow_task.task_token
    assert (await releasing).released


async def _poll_activity(stub: Stub, identity: str) -> pb.PollActivityTaskResponse:
    """The next activity task on queue ``q``; polls end empty after 10 s at most."""
    return await stub.PollActivityTask(
        pb.PollActivityTaskRequest(task_queue="q", identity=identity), timeout=15
    )


async def _start_to_close_due_in(db: asyncpg.Connection, workflow_id: str) -> dict[str, Any]:
    """Each started activity's id → how long until its start-to-close timeout falls due."""
    rows = await db.fetch(
        "SELECT a.attributes->>'activity_id' AS id, t.fire_at - now() AS due "
        "FROM activities a JOIN timers t ON t.workflow_id = a.workflow_id "
        "AND t.run_id = a.run_id AND t.ref_id = a.scheduled_event_id "
        "AND t.kind = 'activity_start_to_close' AND t.attempt = a.attempt "
        "WHERE a.workflow_id = $1 AND a.state = 'started'",
        workflow_id,
    )
    return {row["id"]: row["due"] for row in rows}


async def test_activities_a_lost_completion_started_eagerly_are_queued_again_uncounted(
    stub: Stub, db: asyncpg.Connection
) -> None:
    """The lost completion started 2 activities eagerly for ``w1`` (its answer, dropped here,
    was their only carrier): the release puts them back on their queue as if never dispatched,
    long before their 120 s start-to-close, and their attempt 1 is not used up (it never ran).
    The activities ``w1`` did receive, from an earlier completion and from a poll, stay
    started for it."""
    await stub.StartWorkflow(start_request("eager-acts", workflow_task_timeout=LONG))
    first = await _poll(stub, "w1")
    received = await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=first.task_token,
            identity="w1",
            commands=command_protos(activity_command(0)),
            max_eager_activities=1,
            eager_activity_types=["act"],
            request_id="r0",
        )
    )
    assert len(received.activity_tasks) == 1  # a0: the worker got it and runs it
    await stub.SignalWorkflow(pb.SignalWorkflowRequest(workflow_id="eager-acts", signal_name="s"))
    second = await _poll(stub, "w1")
    lost = await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=second.task_token,
            identity="w1",
            commands=command_protos(activity_command(1), activity_command(2), activity_command(3)),
            max_eager_activities=2,
            eager_activity_types=["act"],
            request_id="r1",
        )
    )
    assert sorted(t.activity_id for t in lost.activity_tasks) == ["a1", "a2"]  # never delivered
    polled = await _poll_activity(stub, "w1")  # the third one was queued: w1 polled it
    assert (polled.activity_id, polled.attempt) == ("a3", 1)

    released = await stub.ReleaseEagerWorkflowTask(_release(second.workflow_execution, "w1", "r1"))
    assert (released.released, released.activities_released) == (False, 2)
    retried = [await _poll_activity(stub, "w2") for _ in range(2)]
    assert sorted((t.activity_id, t.attempt) for t in retried) == [("a1", 1), ("a2", 1)]
    due = await _start_to_close_due_in(db, "eager-acts")
    assert sorted(due) == ["a0", "a1", "a2", "a3"]
    for activity_id in ("a0", "a3"):  # still w1's first attempts, untouched
        assert due[activity_id] > timedelta(seconds=60)
    holders = await db.fetch(
        "SELECT attributes->>'activity_id' AS id, attempt, last_worker_identity AS worker "
        "FROM activities WHERE workflow_id = 'eager-acts' ORDER BY 1"
    )
    assert [(r["id"], r["attempt"], r["worker"]) for r in holders] == [
        ("a0", 1, "w1"),
        ("a1", 1, "w2"),
        ("a2", 1, "w2"),
        ("a3", 1, "w1"),
    ]
    again = await stub.ReleaseEagerWorkflowTask(_release(second.workflow_execution, "w1", "r1"))
    assert (again.released, again.activities_released) == (False, 0)  # w2 holds them now


async def test_a_late_release_leaves_the_retry_the_worker_polled(stub: Stub) -> None:
    """The lost completion's eager attempt timed out on its own (a 2 s start-to-close) before
    the release came, and ``w1`` polled the retry: that attempt is one ``w1`` did receive, so
    the release, naming the same worker and request id, must leave it alone (a poll's start
    clears ``eager_request_id``)."""
    await stub.StartWorkflow(start_request("late-release", workflow_task_timeout=LONG))
    task = await _poll(stub, "w1")
    short = commands.ScheduleActivity(
        seq=0,
        activity_id="a0",
        activity_type="act",
        start_to_close_timeout=timedelta(seconds=2),
        retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=10)),
    )
    lost = await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(short),
            max_eager_activities=1,
            eager_activity_types=["act"],
            request_id="r1",
        )
    )
    assert [t.attempt for t in lost.activity_tasks] == [1]  # never delivered
    retried = await _poll_activity(stub, "w1")  # after attempt 1's start-to-close
    assert (retried.activity_id, retried.attempt) == ("a0", 2)
    released = await stub.ReleaseEagerWorkflowTask(_release(task.workflow_execution, "w1", "r1"))
    assert (released.released, released.activities_released) == (False, 0)
