"""Lost poll answers (``lost_answers.release_polls``): a worker whose poll failed without an
answer names the poll's request id in a release; what the poll started for it goes back at
once (a workflow task times out, an activity attempt is queued again uncounted), a poll still
running on any server is ended, and an id that names nothing changes nothing
(docs/decisions.md §8)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from chronicle.history import events as ev
from chronicle.protos.v1 import common_pb2, service_pb2_grpc
from chronicle.protos.v1 import service_pb2 as pb
from chronicle.server import errors
from chronicle.server.engine import lost_answers
from chronicle.server.store import notify
from tests.server.conftest import activity_command, attributes, command_protos, start_request

Stub = service_pb2_grpc.WorkflowServiceStub
LONG = Duration(seconds=60)
"""The workflow-task timeout of these runs: far beyond any wait of these tests."""


async def _poll(
    stub: Stub, identity: str, request_id: str = "", timeout: float = 15.0
) -> pb.PollWorkflowTaskResponse:
    """The next workflow task on queue ``q`` (polling again while polls end empty)."""
    deadline = time.monotonic() + timeout
    while True:
        task = await stub.PollWorkflowTask(
            pb.PollWorkflowTaskRequest(task_queue="q", identity=identity, request_id=request_id),
            timeout=10,
        )
        if task.task_token:
            return task
        assert time.monotonic() < deadline, "no workflow task"


async def _poll_activity(
    stub: Stub, identity: str, request_id: str = ""
) -> pb.PollActivityTaskResponse:
    """The next activity task on queue ``q``; polls end empty after 10 s at most."""
    return await stub.PollActivityTask(
        pb.PollActivityTaskRequest(task_queue="q", identity=identity, request_id=request_id),
        timeout=15,
    )


def _release(identity: str, *request_ids: str) -> pb.ReleaseEagerWorkflowTaskRequest:
    return pb.ReleaseEagerWorkflowTaskRequest(identity=identity, poll_request_ids=request_ids)


async def _history(stub: Stub, workflow_id: str) -> list[Any]:
    response = await stub.GetWorkflowHistory(pb.GetWorkflowHistoryRequest(workflow_id=workflow_id))
    return list(response.events)


async def _timers(db: asyncpg.Connection) -> dict[tuple[str, str, int], Any]:
    """Every timer: (workflow id, kind, ref id) → when it falls due."""
    rows = await db.fetch("SELECT workflow_id, kind, ref_id, fire_at FROM timers")
    return {(r["workflow_id"], r["kind"], r["ref_id"]): r["fire_at"] for r in rows}


async def _activities(db: asyncpg.Connection) -> list[tuple[str, str, int, str]]:
    rows = await db.fetch(
        "SELECT attributes->>'activity_id' AS id, state, attempt, last_worker_identity "
        "FROM activities ORDER BY 1"
    )
    return [(r["id"], r["state"], r["attempt"], r["last_worker_identity"]) for r in rows]


async def _started_activity(stub: Stub, workflow_id: str, request_id: str) -> Any:
    """A run whose activity ``a0`` worker ``w1`` polled (``request_id``); its workflow task
    completed. Returns the activity task."""
    await stub.StartWorkflow(start_request(workflow_id, workflow_task_timeout=LONG))
    task = await _poll(stub, "w1", request_id=f"{request_id}-wft")
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token, identity="w1", commands=command_protos(activity_command(0))
        )
    )
    polled = await _poll_activity(stub, "w1", request_id)
    assert (polled.activity_id, polled.attempt) == ("a0", 1)
    return polled


async def test_what_a_lost_poll_started_goes_back_at_once_through_any_replica(
    stub: Stub, stub_b: Stub, db: asyncpg.Connection
) -> None:
    """The task ``w1`` polled (``p1``) is retried long before its 60 s timeout, the attempt
    it polled (``p2``) is queued again as attempt 1; the release went to the other replica."""
    await stub.StartWorkflow(start_request("lost-wft", workflow_task_timeout=LONG))
    lost = await _poll(stub, "w1", request_id="p1")
    started = attributes((await _history(stub, "lost-wft"))[-1])
    assert isinstance(started, ev.WorkflowTaskStarted)
    assert (started.identity, started.request_id) == ("w1", "p1")  # the poll's request id
    await _started_activity(stub, "lost-act", "p2")

    released = await stub_b.ReleaseEagerWorkflowTask(_release("w1", "p1", "p2"))
    assert (released.released, released.workflow_tasks_released) == (True, 1)
    assert released.activities_released == 1
    retry = await _poll(stub_b, "w2")
    assert (retry.workflow_execution.workflow_id, retry.attempt) == ("lost-wft", 2)
    again = await _poll_activity(stub_b, "w2")
    assert (again.activity_id, again.attempt) == ("a0", 1)  # put back, not counted
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await stub.CompleteWorkflowTask(
            pb.CompleteWorkflowTaskRequest(task_token=lost.task_token, identity="w1")
        )
    assert late.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_release_naming_nothing_changes_nothing(stub: Stub, db: asyncpg.Connection) -> None:
    """Ids of a poll that returned no task, of a task already completed, of another worker's
    poll, and never used: nothing is released, no timer moves, no attempt changes hands."""
    empty = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="empty", identity="w1", request_id="p-empty"),
        timeout=1,
    )
    assert not empty.task_token
    await stub.StartWorkflow(start_request("done", workflow_task_timeout=LONG))
    done = await _poll(stub, "w1", request_id="p-done")
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(task_token=done.task_token, identity="w1")
    )
    await stub.StartWorkflow(start_request("held", workflow_task_timeout=LONG))
    await _poll(stub, "w1", request_id="p-held")
    await _started_activity(stub, "held-act", "p-act")
    timers, activities = await _timers(db), await _activities(db)
    assert len([k for k in timers if k[1] == "workflow_task_timeout"]) == 1

    for identity, ids in (
        ("w1", ["p-empty", "p-done", "p-never"]),
        ("w2", ["p-held", "p-act"]),  # another worker's polls
    ):
        released = await stub.ReleaseEagerWorkflowTask(_release(identity, *ids))
        assert (released.released, released.workflow_tasks_released) == (False, 0)
        assert released.activities_released == 0
    assert await _timers(db) == timers
    assert await _activities(db) == activities
    assert [e.event_type for e in await _history(stub, "held")][-1] == "WorkflowTaskStarted"


async def test_a_release_ends_the_poll_still_waiting_on_another_replica(
    stub: Stub, stub_b: Stub
) -> None:
    """A poll whose worker gave it up (its connection broke) still waits on a server that has
    not seen the break; released through the other replica, it ends at once, so it cannot take
    the next task nobody would get."""
    waiting = asyncio.ensure_future(
        stub.PollWorkflowTask(
            pb.PollWorkflowTaskRequest(task_queue="q", identity="w1", request_id="p-waiting"),
            timeout=30,
        )
    )
    await asyncio.sleep(0.5)  # the poll waits on the first server
    assert not waiting.done()
    await stub_b.ReleaseEagerWorkflowTask(_release("w1", "p-waiting"))
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await asyncio.wait_for(waiting, 5)
    assert ended.value.code() == grpc.StatusCode.CANCELLED
    await stub.StartWorkflow(start_request("after", workflow_task_timeout=LONG))
    task = await _poll(stub_b, "w2")
    assert (task.workflow_execution.workflow_id, task.attempt) == ("after", 1)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (_release("w1", "p-held", ""), "poll_request_ids[1]"),
        (_release("", "p-held"), "identity"),
        (_release("w1", "p-held", *(f"p{i}" for i in range(1000))), "poll_request_ids"),
        (_release("w1", "p-held", "p" * 2000), "poll_request_ids[1]"),
        (
            pb.ReleaseEagerWorkflowTaskRequest(
                workflow_execution=common_pb2.WorkflowExecution(workflow_id="x", run_id="y"),
                identity="w1",
                request_id="r1",
                poll_request_ids=["p-held"],
            ),
            "poll_request_ids",
        ),
    ],
    ids=["an empty id", "no identity", "too many ids", "an id too long", "a completion and polls"],
)
async def test_a_malformed_poll_release_is_refused_naming_the_field_and_changes_nothing(
    stub: Stub, db: asyncpg.Connection, request_: pb.ReleaseEagerWorkflowTaskRequest, field: str
) -> None:
    """The task the release also names (``p-held``) stays started: its timer does not move."""
    await stub.StartWorkflow(start_request("held", workflow_task_timeout=LONG))
    await _poll(stub, "w1", request_id="p-held")
    timers = await _timers(db)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ReleaseEagerWorkflowTask(request_)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (refused.value.details() or "")
    assert await _timers(db) == timers


async def test_a_release_never_ends_another_workers_poll(stub: Stub, stub_b: Stub) -> None:
    """A release names the polls of its own worker: like what they started (matched by
    identity), a poll of another worker with the same request id keeps waiting and takes the
    next task (the cancel once matched the namespace and id only)."""
    waiting = asyncio.ensure_future(
        stub.PollWorkflowTask(
            pb.PollWorkflowTaskRequest(task_queue="q", identity="w1", request_id="p-same"),
            timeout=30,
        )
    )
    await asyncio.sleep(0.5)  # the poll waits on the first server
    released = await stub_b.ReleaseEagerWorkflowTask(_release("w2", "p-same"))
    assert released.workflow_tasks_released == 0
    await asyncio.sleep(1.0)  # a notification is delivered within milliseconds
    assert not waiting.done()
    await stub.StartWorkflow(start_request("w1-still-polls", workflow_task_timeout=LONG))
    task = await asyncio.wait_for(waiting, 10)
    assert (task.workflow_execution.workflow_id, task.attempt) == ("w1-still-polls", 1)


async def test_a_poll_that_arrives_after_its_release_takes_nothing(
    stub: Stub, stub_b: Stub
) -> None:
    """A poll's request can reach its server after the worker released it (the server was
    frozen with the request unread, behind a proxy that keeps its side of the connection
    open): the notification found no such poll running, but the server remembers the release,
    so the late poll ends at once instead of taking a task whose answer nobody reads."""
    await stub_b.ReleaseEagerWorkflowTask(_release("w1", "p-late"))
    await stub.StartWorkflow(start_request("late", workflow_task_timeout=LONG))
    await asyncio.sleep(1.0)  # the notification reached the first server
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await stub.PollWorkflowTask(
            pb.PollWorkflowTaskRequest(task_queue="q", identity="w1", request_id="p-late"),
            timeout=10,
        )
    assert ended.value.code() == grpc.StatusCode.CANCELLED
    task = await _poll(stub_b, "w2")
    assert (task.workflow_execution.workflow_id, task.attempt) == ("late", 1)


async def test_released_polls_are_remembered_within_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The releases a server was not running a poll for are kept at most ``MAX_RELEASED`` at a
    time and ``RELEASED_MEMORY`` seconds each; a poll with a forgotten id runs."""

    def ends_at_once(polling: lost_answers.Polling, request_id: str) -> bool:
        try:
            with polling.running("ns", "w1", request_id):
                return False
        except errors.Cancelled:
            return True

    monkeypatch.setattr(lost_answers, "MAX_RELEASED", 3)
    polling = lost_answers.Polling()
    for i in range(5):
        polling.on_released(notify.poll_key("ns", "w1", f"p{i}"))
    assert [ends_at_once(polling, f"p{i}") for i in range(5)] == [False, False, True, True, True]
    assert not ends_at_once(polling, "p-other")
    assert not ends_at_once(polling, "")
    assert polling.remembered == 3

    monkeypatch.setattr(lost_answers, "RELEASED_MEMORY", 0.0)
    short = lost_answers.Polling()
    short.on_released(notify.poll_key("ns", "w1", "p-old"))
    assert not ends_at_once(short, "p-old")  # its time is up
    short.on_released(notify.poll_key("ns", "w1", "p-new"))
    assert short.remembered == 1  # the expired one was dropped as the next came
