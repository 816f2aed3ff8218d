"""Sync match: a new run's first workflow task goes to a poll waiting on this server, started in
the start's own commit; when the hand-off cannot happen, the task is not lost."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest
from google.protobuf.duration_pb2 import Duration

from chronicle.protos.v1 import service_pb2 as pb
from chronicle.protos.v1 import service_pb2_grpc
from chronicle.server.app import Server
from chronicle.server.engine import start
from chronicle.server.matching import poller
from chronicle.server.matching.handoff import Handoff
from chronicle.server.store.notify import Waiter
from tests.sdk_io.helpers import eventually
from tests.server.conftest import event_types, start_request


async def waiting_polls(server: Server, count: int) -> None:
    """Wait until ``count`` polls wait on queue ``q``."""
    handoff = server.services.handoff

    async def ready() -> bool | None:
        return True if handoff.waiting_on("default", "q") >= count else None

    await eventually(ready, timeout=5, interval=0.01)


async def history(
    stub: service_pb2_grpc.WorkflowServiceStub, workflow_id: str
) -> list[pb.HistoryEvent]:
    """The run's events."""
    response = await stub.GetWorkflowHistory(pb.GetWorkflowHistoryRequest(workflow_id=workflow_id))
    return list(response.events)


async def test_a_waiting_poll_gets_the_first_task_started_in_the_start_commit(
    server: Server, stub: service_pb2_grpc.WorkflowServiceStub, db: asyncpg.Connection
) -> None:
    poll = asyncio.ensure_future(
        stub.PollWorkflowTask(pb.PollWorkflowTaskRequest(task_queue="q", identity="w1"), timeout=5)
    )
    await waiting_polls(server, 1)
    started = await stub.StartWorkflow(start_request("h-1"))
    task = await poll
    assert task.workflow_execution.run_id == started.run_id
    assert event_types(task.events) == [
        "WorkflowStarted",
        "WorkflowTaskScheduled",
        "WorkflowTaskStarted",
    ]
    events = await history(stub, "h-1")
    scheduled, began = events[1], events[2]
    # one commit: a dispatch by the poll would have started it in a later transaction
    assert scheduled.time == began.time
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE workflow_id = 'h-1'") == 0
    assert server.services.handoff.waiting_on("default", "q") == 0


async def test_a_start_that_makes_no_task_gives_the_poll_back(
    server: Server, stub: service_pb2_grpc.WorkflowServiceStub
) -> None:
    """A delayed start schedules no task yet: the poll waits on and takes the next start's."""
    poll = asyncio.ensure_future(
        stub.PollWorkflowTask(pb.PollWorkflowTaskRequest(task_queue="q", identity="w1"), timeout=5)
    )
    await waiting_polls(server, 1)
    delayed = start_request("h-later", start_delay=Duration(seconds=60))
    await stub.StartWorkflow(delayed)
    await waiting_polls(server, 1)  # given back
    assert not poll.done()
    await stub.StartWorkflow(start_request("h-now"))
    task = await poll
    assert task.workflow_execution.workflow_id == "h-now"


async def test_a_task_handed_to_a_poll_that_ended_is_timed_out_and_retried(
    server: Server, stub: service_pb2_grpc.WorkflowServiceStub
) -> None:
    """The poll's caller went away while the start committed: its task times out at once
    (instead of after the workflow-task timeout) and the retry goes to the next poll."""
    handoff = server.services.handoff
    with handoff.waiting("default", "q", "ghost", Waiter()) as ghost:
        ghost.gone = True  # its poll ends between the start's take and its commit
        await stub.StartWorkflow(
            start_request("h-ghost", workflow_task_timeout=Duration(seconds=60))
        )

    async def timed_out() -> list[str] | None:
        types = event_types(await history(stub, "h-ghost"))
        return types if "WorkflowTaskTimedOut" in types else None

    types = await eventually(timed_out, timeout=10)
    assert types[:3] == ["WorkflowStarted", "WorkflowTaskScheduled", "WorkflowTaskStarted"]
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity="w2"), timeout=5
    )
    assert task.workflow_execution.workflow_id == "h-ghost"
    assert task.attempt == 2


async def test_a_poll_cancelled_after_it_was_handed_its_task_gives_it_back_at_once(
    server: Server, stub: service_pb2_grpc.WorkflowServiceStub
) -> None:
    """The start has committed and handed the task over, but the poll is cancelled before it
    resumes to return it: the task times out at once and the retry goes to the next poll."""
    services = server.services
    poll = asyncio.ensure_future(
        poller.poll_workflow_task(services, "default", "q", "w1", timeout=30)
    )
    await waiting_polls(server, 1)
    request = start.StartRequest(
        namespace="default",
        workflow_id="h-cancelled",
        workflow_type="wf",
        task_queue="q",
        workflow_task_timeout=timedelta(seconds=60),
    )
    await start.start_workflow(services, request)  # handed to the poll
    poll.cancel()  # before the poll task runs again
    with pytest.raises(asyncio.CancelledError):
        await poll
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity="w2"), timeout=10
    )
    assert task.workflow_execution.workflow_id == "h-cancelled"
    assert task.attempt == 2


async def test_without_a_waiting_poll_the_task_is_queued(
    server: Server, stub: service_pb2_grpc.WorkflowServiceStub, db: asyncpg.Connection
) -> None:
    await stub.StartWorkflow(start_request("h-queued"))
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE workflow_id = 'h-queued'") == 1
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity="w1"), timeout=5
    )
    assert task.workflow_execution.workflow_id == "h-queued"


async def test_a_poll_whose_wait_is_over_is_not_offered_again() -> None:
    """Given back by a start that made no task while its wait was over, the poll returns
    (empty) instead of being taken by the next start, whose task it would never deliver."""
    handoff = Handoff()
    with handoff.waiting("default", "q", "w1", Waiter()) as poll:
        assert handoff.take("default", "q") is poll
        settling = asyncio.create_task(poll.settled(5.0))
        await asyncio.sleep(0)  # the poll's wait is over: it only awaits the hand-off
        handoff.give_back("default", "q", poll)
        assert await settling is None
        assert handoff.waiting_on("default", "q") == 0
        assert handoff.take("default", "q") is None


def test_an_ending_poll_withdraws_from_the_current_offer_list() -> None:
    """A poll that leased a task itself and looked again may sit in a newer list than the one
    it joined; ending it must not drop the other polls of that list."""
    handoff = Handoff()
    first_poll = handoff.waiting("default", "q", "w1", Waiter())
    first = first_poll.__enter__()
    with handoff.waiting("default", "q", "w2", Waiter()):
        handoff.pause("default", "q", first)
    # w2 ended, so the list w1 joined is gone; w1 found nothing and is offered in a new one
    handoff.resume("default", "q", first)
    with handoff.waiting("default", "q", "w3", Waiter()) as third:
        first_poll.__exit__(None, None, None)
        assert handoff.waiting_on("default", "q") == 1
        assert handoff.take("default", "q") is third
