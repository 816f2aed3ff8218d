"""Postgres dies while a call's commit is flushed but not yet answered: the transaction is
committed (crash recovery keeps it), yet the server cannot know, and the caller gets
UNAVAILABLE. A task that such a commit started for its caller (a poll's dispatch, an eager
activity or workflow task handed back by a completion) reached nobody; once Postgres is back
it must be handed out again at once, not after its timeout (60 s here; each test waits 15 s).

The commits are held with ``tests.postgres_process.hold_commits`` on a Postgres of the test's
own, which is then SIGKILLed and restarted on the same data directory.
"""

from __future__ import annotations

import asyncio
import os
import signal as signal_module
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
import pytest

from chronicle.history import commands, wire
from chronicle.protos.v1 import service_pb2 as pb
from chronicle.protos.v1 import service_pb2_grpc
from chronicle.server.app import Server
from chronicle.server.config import ServerConfig
from tests.postgres_process import PostgresProcess, hold_commits, release_commits, wait_held
from tests.server.conftest import (
    command_protos,
    event_types,
    payload,
    payload_proto,
    start_request,
)

TIMEOUT = timedelta(seconds=60)
"""Every task's timeout: far beyond the tests' waits, so no test passes by waiting for it."""
WAIT = 15.0
"""How long a test waits for the task to be handed out again."""


@dataclass
class Outage:
    """A server on a Postgres the test may kill; ``stub`` talks to the server's ``port``."""

    postgres: PostgresProcess
    server: Server
    stub: Any
    port: int


@pytest.fixture
async def outage(own_postgres: PostgresProcess, own_database_url: str) -> AsyncIterator[Outage]:
    """A started in-process server on ``own_postgres`` and a stub to it."""
    server = Server(
        ServerConfig(
            database_url=own_database_url,
            port=0,
            poll_timeout=5.0,
            sticky_timeout=timedelta(seconds=1),
        )
    )
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    stub = service_pb2_grpc.WorkflowServiceStub(channel)
    outage = Outage(own_postgres, server, stub, server.port)
    try:
        yield outage
    finally:
        await channel.close()
        await outage.server.stop(grace=1.0)


async def crash_during_commit(outage: Outage, call: Callable[[], Awaitable[Any]]) -> None:
    """Make ``call()`` with commits held; once its commit is flushed and waiting, kill Postgres
    and start it again. The call fails with UNAVAILABLE, though its transaction committed."""
    postgres = outage.postgres
    await hold_commits(postgres.url())
    pending = asyncio.ensure_future(call())
    await wait_held(postgres.url(), "chronicle-server")
    postgres.kill()
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await asyncio.wait_for(pending, 10)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value
    postgres.forget_altered_settings()
    postgres.start()


async def while_unavailable(call: Callable[[], Awaitable[Any]]) -> Any:
    """``call()``, again while it fails with UNAVAILABLE (as clients retry), up to ``WAIT``."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)


async def poll_until(poll: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll (each poll ends empty after the server's 5 s) until a task comes, up to ``WAIT``;
    a poll failing while the server's pool reconnects is retried."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        task = await while_unavailable(poll)
        if task.task_token:
            return task
    raise AssertionError(f"{what} not handed out again within {WAIT} s (its timeout is 60 s)")


def schedule(seq: int = 1) -> list[Any]:
    """One activity of type ``act`` with a 60 s start-to-close timeout."""
    command = commands.ScheduleActivity(
        seq=seq, activity_id=str(seq), activity_type="act", start_to_close_timeout=TIMEOUT
    )
    return command_protos(command)


async def start_and_take_task(stub: Any, workflow_id: str, identity: str = "w1") -> Any:
    """Start a workflow (60 s workflow task timeout) and poll its first workflow task."""
    await stub.StartWorkflow(
        start_request(workflow_id, workflow_task_timeout=wire.duration_to_proto(TIMEOUT))
    )
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity=identity), timeout=10
    )
    assert task.task_token
    return task


def poll_activity(stub: Any, identity: str = "w2") -> Any:
    """A PollActivityTask call on queue ``q``."""
    return stub.PollActivityTask(
        pb.PollActivityTaskRequest(task_queue="q", identity=identity), timeout=10
    )


def poll_workflow_task(stub: Any, identity: str = "w1") -> Any:
    """A PollWorkflowTask call on queue ``q``."""
    return stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity=identity), timeout=10
    )


async def history(stub: Any, workflow_id: str) -> list[str]:
    """The run's event types."""
    response = await stub.GetWorkflowHistory(pb.GetWorkflowHistoryRequest(workflow_id=workflow_id))
    return event_types(response.events)


async def test_an_activity_dispatched_to_a_poll_that_never_got_it_is_queued_again(
    outage: Outage,
) -> None:
    stub = outage.stub
    task = await start_and_take_task(stub, "lost-poll-activity")
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(task_token=task.task_token, commands=schedule())
    )
    await crash_during_commit(outage, lambda: poll_activity(stub, "lost"))  # it committed
    activity = await poll_until(lambda: poll_activity(stub), "the activity")
    assert activity.attempt == 1  # put back as never dispatched, not timed out


async def test_a_workflow_task_dispatched_to_a_poll_that_never_got_it_is_retried(
    outage: Outage,
) -> None:
    stub = outage.stub
    await stub.StartWorkflow(
        start_request("lost-poll-task", workflow_task_timeout=wire.duration_to_proto(TIMEOUT))
    )
    await crash_during_commit(outage, lambda: poll_workflow_task(stub, "lost"))
    assert (await history(stub, "lost-poll-task"))[-1] == "WorkflowTaskStarted"  # committed
    task = await poll_until(lambda: poll_workflow_task(stub), "the workflow task")
    assert event_types(task.events)[-3:] == [
        "WorkflowTaskTimedOut",
        "WorkflowTaskScheduled",
        "WorkflowTaskStarted",
    ]


async def test_an_eager_activity_whose_completion_answer_was_lost_is_queued_again(
    outage: Outage,
) -> None:
    stub = outage.stub
    task = await start_and_take_task(stub, "lost-eager-activity")
    request = pb.CompleteWorkflowTaskRequest(
        task_token=task.task_token,
        identity="w1",
        commands=schedule(),
        max_eager_activities=1,
        eager_activity_types=["act"],
    )
    await crash_during_commit(outage, lambda: stub.CompleteWorkflowTask(request))
    assert (await history(stub, "lost-eager-activity"))[-1] == "ActivityScheduled"  # committed
    activity = await poll_until(lambda: poll_activity(stub), "the eager activity")
    assert activity.attempt == 1


async def test_an_eager_workflow_task_whose_activity_completion_answer_was_lost_is_retried(
    outage: Outage,
) -> None:
    stub = outage.stub
    task = await start_and_take_task(stub, "lost-eager-task")
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token, identity="w1", commands=schedule()
        )
    )
    activity = await poll_until(lambda: poll_activity(stub, "w1"), "the activity")
    request = pb.CompleteActivityTaskRequest(
        task_token=activity.task_token,
        identity="w1",
        result=payload_proto(1),
        eager_workflow_task=True,
    )
    await crash_during_commit(outage, lambda: stub.CompleteActivityTask(request))
    assert (await history(stub, "lost-eager-task"))[-3:] == [
        "ActivityCompleted",
        "WorkflowTaskScheduled",
        "WorkflowTaskStarted",  # started for w1 by the completion that committed
    ]
    task = await poll_until(lambda: poll_workflow_task(stub), "the workflow task")
    assert event_types(task.events)[-3:] == [
        "WorkflowTaskTimedOut",
        "WorkflowTaskScheduled",
        "WorkflowTaskStarted",
    ]


async def test_a_call_cut_by_the_crash_of_another_backend_is_unavailable(outage: Outage) -> None:
    """Another backend dies (the OOM killer): Postgres ends every backend (57P02) and recovers.
    A call running then fails with UNAVAILABLE, and its retry goes through once Postgres is
    back, on the pool's new connections."""
    stub, url = outage.stub, outage.postgres.url("chronicle")
    await stub.StartWorkflow(start_request("crashed-neighbour"))
    holder = await asyncpg.connect(url)
    await holder.execute("BEGIN")
    await holder.execute(
        "SELECT FROM executions WHERE workflow_id = 'crashed-neighbour' FOR UPDATE"
    )
    request = pb.SignalWorkflowRequest(
        workflow_id="crashed-neighbour", signal_name="go", request_id="neighbour-1"
    )
    signal = asyncio.ensure_future(stub.SignalWorkflow(request, timeout=10))
    await wait_for_lock(url)
    os.kill(holder.get_server_pid(), signal_module.SIGKILL)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await signal
    holder.terminate()
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value
    # Postgres recovers by itself; the call is retried, as clients do
    await while_unavailable(lambda: stub.SignalWorkflow(request, timeout=10))
    assert (await history(stub, "crashed-neighbour")).count("SignalReceived") == 1


async def wait_for_lock(url: str) -> None:
    """Wait until a server backend waits for a row lock."""
    conn = await asyncpg.connect(url)
    try:
        for _ in range(500):
            if await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = 'chronicle-server' AND wait_event_type = 'Lock'"
            ):
                return
            await asyncio.sleep(0.02)
    finally:
        await conn.close()
    raise AssertionError("no server backend waits for the lock")


async def held_then_released(outage: Outage, call: Callable[[], Awaitable[Any]]) -> Any:
    """Make ``call()`` with commits held: it must wait in its commit, after the WAL flush
    (a commit that answered before its flush would not wait for the standby either). Then
    release the commits; returns the call's response."""
    url = outage.postgres.url()
    await hold_commits(url)
    pending = asyncio.ensure_future(call())
    await wait_held(url, "chronicle-server")
    assert not pending.done()
    await release_commits(url)
    return await asyncio.wait_for(pending, 10)


async def test_every_commit_waits_for_the_wal_flush(outage: Outage) -> None:
    """Each kind of commit the server makes for a call waits for its WAL flush before the
    call answers, though the database says ``synchronous_commit = off``: a start, a workflow
    task's dispatch and completion (fast path and eager activity start), an activity's
    completion (eager workflow task), a signal, and the completion that closes the run."""
    stub, url = outage.stub, outage.postgres.url("chronicle")
    admin = await asyncpg.connect(url)
    try:
        await admin.execute("ALTER DATABASE chronicle SET synchronous_commit = off")
    finally:
        await admin.close()
    await outage.server.stop(grace=0)  # its pooled connections predate the setting
    outage.server = Server(outage.server.config.model_copy(update={"port": outage.port}))
    await outage.server.start()
    await held_then_released(
        outage,
        lambda: stub.StartWorkflow(
            start_request("flushed", workflow_task_timeout=wire.duration_to_proto(TIMEOUT))
        ),
    )
    await held_then_released(
        outage,
        lambda: stub.SignalWorkflow(
            pb.SignalWorkflowRequest(workflow_id="flushed", signal_name="go", request_id="s1")
        ),
    )
    task = await held_then_released(outage, lambda: poll_workflow_task(stub))
    completed = await held_then_released(
        outage,
        lambda: stub.CompleteWorkflowTask(
            pb.CompleteWorkflowTaskRequest(
                task_token=task.task_token,
                identity="w1",
                commands=schedule(),
                max_eager_activities=1,
                eager_activity_types=["act"],
            )
        ),
    )
    [activity] = completed.activity_tasks
    answer = await held_then_released(
        outage,
        lambda: stub.CompleteActivityTask(
            pb.CompleteActivityTaskRequest(
                task_token=activity.task_token,
                identity="w1",
                result=payload_proto(1),
                eager_workflow_task=True,
            )
        ),
    )
    closing = pb.CompleteWorkflowTaskRequest(
        task_token=answer.workflow_task.task_token,
        identity="w1",
        commands=command_protos(commands.CompleteWorkflow(result=payload(2))),
    )
    await held_then_released(outage, lambda: stub.CompleteWorkflowTask(closing))
    assert (await history(stub, "flushed"))[-1] == "WorkflowCompleted"
