"""Dispatching queued workflow tasks (``dispatch.py``): the alone path (peek, one guarded
write) and the locked path it hands over to; each task is started exactly once, also when two
servers dispatch the same queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from asyncpg import connect_utils
from google.protobuf.duration_pb2 import Duration

from chronicle.protos.v1 import service_pb2 as pb
from chronicle.protos.v1 import service_pb2_grpc
from chronicle.server.app import Server
from chronicle.server.engine import dispatch, fastpath, grants
from chronicle.server.store import pool as store_pool
from chronicle.server.store import sql
from chronicle.server.store.rows import RunKey
from tests.sdk_io.helpers import eventually
from tests.server.conftest import event_types, running_server, start_request

RUNS = 24


@pytest.fixture
async def second_server(database_url: str, server: Server) -> AsyncIterator[Server]:
    """Another server on the same database."""
    async with running_server(database_url) as instance:
        yield instance


async def _poll(
    stub: service_pb2_grpc.WorkflowServiceStub, identity: str
) -> pb.PollWorkflowTaskResponse:
    return await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity=identity), timeout=3
    )


async def test_a_queued_task_is_started_and_its_run_known(
    server: Server, stub: service_pb2_grpc.WorkflowServiceStub, db: asyncpg.Connection
) -> None:
    started = await stub.StartWorkflow(start_request("queued"))  # no poll waits: queued
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE workflow_id = 'queued'") == 1
    task = await _poll(stub, "w1")
    assert task.workflow_execution.run_id == started.run_id
    assert event_types(task.events) == [
        "WorkflowStarted",
        "WorkflowTaskScheduled",
        "WorkflowTaskStarted",
    ]
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE workflow_id = 'queued'") == 0
    # The worker's completion will not read the row back: the dispatch wrote it.
    known = server.services.known_rows.take(RunKey("default", "queued", started.run_id))
    assert known is not None
    assert known.state.workflow_task is not None
    assert known.state.workflow_task.started_event_id == 3


async def test_two_servers_dispatching_one_queue_start_each_task_once(
    stub: service_pb2_grpc.WorkflowServiceStub,
    second_server: Server,
    db: asyncpg.Connection,
) -> None:
    runs = {}
    for i in range(RUNS):
        response = await stub.StartWorkflow(start_request(f"race-{i}"))
        runs[response.run_id] = f"race-{i}"
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{second_server.port}")
    other = service_pb2_grpc.WorkflowServiceStub(channel)
    granted: list[str] = []

    async def poller(target: service_pb2_grpc.WorkflowServiceStub, identity: str) -> None:
        while len(granted) < RUNS:
            task = await _poll(target, identity)
            if task.task_token:
                granted.append(task.workflow_execution.run_id)

    try:
        await asyncio.wait_for(
            asyncio.gather(
                *(poller(stub, f"a{i}") for i in range(3)),
                *(poller(other, f"b{i}") for i in range(3)),
            ),
            timeout=30,
        )
    finally:
        await channel.close()
    assert sorted(granted) == sorted(runs)
    started = await db.fetch(
        "SELECT run_id, count(*) AS n FROM history_events "
        "WHERE event_type = 'WorkflowTaskStarted' GROUP BY run_id"
    )
    assert {r["run_id"]: r["n"] for r in started} == dict.fromkeys(runs, 1)
    assert await db.fetchval("SELECT count(*) FROM tasks") == 0


async def test_stale_task_rows_are_dropped_and_the_poll_waits(
    stub: service_pb2_grpc.WorkflowServiceStub, db: asyncpg.Connection
) -> None:
    """A row for a task already started, and one for a run that is not there: the alone path
    hands both to the locked path, which deletes them; the queue is then empty."""
    started = await stub.StartWorkflow(start_request("stale"))
    assert (await _poll(stub, "w1")).task_token
    insert = (
        "INSERT INTO tasks (kind, namespace, task_queue, workflow_id, run_id, "
        "scheduled_event_id, sticky_identity) VALUES ('workflow', 'default', 'q', $1, $2, 2, '')"
    )
    await db.execute(insert, "stale", started.run_id)
    await db.execute(insert, "gone", "no-such-run")
    empty = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity="w2"), timeout=1.5
    )
    assert not empty.task_token
    assert await db.fetchval("SELECT count(*) FROM tasks") == 0
    history = await db.fetch(
        "SELECT event_type FROM history_events WHERE workflow_id = 'stale' ORDER BY event_id"
    )
    assert [r["event_type"] for r in history].count("WorkflowTaskStarted") == 1


async def test_a_run_locked_elsewhere_does_not_hold_up_its_queue(
    stub: service_pb2_grpc.WorkflowServiceStub, db: asyncpg.Connection, database_url: str
) -> None:
    """The oldest task's run is locked by another transaction (a long close, a reset): the
    dispatch does not wait for it, it starts the next task; the locked one follows later."""
    first = await stub.StartWorkflow(start_request("held"))
    second = await stub.StartWorkflow(start_request("free"))
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM executions WHERE workflow_id = 'held' FOR UPDATE")
            task = await _poll(stub, "w1")
            assert task.workflow_execution.run_id == second.run_id
        task = await _poll(stub, "w1")
        assert task.workflow_execution.run_id == first.run_id
    finally:
        await holder.close()


async def test_the_peek_keeps_its_generic_plan(db: asyncpg.Connection) -> None:
    """The candidates' limit is in the statement's text: with a parameter, Postgres planned
    every call afresh (0.12 ms a poll)."""
    assert f"LIMIT {dispatch.CANDIDATES}" in sql.PEEK_WORKFLOW_TASKS
    for _ in range(12):
        await db.fetch(
            sql.PEEK_WORKFLOW_TASKS, "default", "q", "workflow", "w", timedelta(seconds=1)
        )
    plans = await db.fetchrow(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
        "WHERE statement LIKE '%LEFT JOIN executions e%' AND statement NOT LIKE '%pg_prepared%'"
    )
    assert plans is not None
    assert plans["custom_plans"] <= 5, dict(plans)
    assert plans["generic_plans"] == 12 - plans["custom_plans"], dict(plans)


async def test_a_cancelled_dispatch_that_lost_its_task_leaves_the_winner_alone(
    server: Server, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dispatch A peeks a task; B starts it first (as the same event id); A's guarded write
    then applies nothing, and A is cancelled before it reads that answer. A's clean-up, for a
    write whose outcome it does not know, must not time out B's task."""
    services = server.services
    await _start_queued(server, "lost")
    real_write = fastpath.write_guarded

    async def b_first_then_cancelled(*args: Any, **kwargs: Any) -> Any:
        granted = await dispatch._dispatch_locked(services, "default", "q", "b", frozenset())
        assert granted is not None
        assert granted.token.started_event_id == 3
        assert await real_write(*args, **kwargs) is None  # the guard saw B's write
        raise asyncio.CancelledError  # the cancellation lands before the answer is read

    monkeypatch.setattr(fastpath, "write_guarded", b_first_then_cancelled)
    with pytest.raises(asyncio.CancelledError):
        await dispatch.dispatch(services, "default", "q", "a")
    timer = await db.fetchval(
        "SELECT fire_at - now() FROM timers WHERE workflow_id = 'lost' "
        "AND kind = 'workflow_task_timeout' AND ref_id = 3"
    )
    assert timer > timedelta(seconds=5)  # B's task keeps its whole timeout
    assert await _types(db, "lost") == [
        "WorkflowStarted",
        "WorkflowTaskScheduled",
        "WorkflowTaskStarted",
    ]


async def test_a_dispatch_cancelled_mid_write_times_out_only_what_it_started(
    server: Server,
    db: asyncpg.Connection,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dispatch is cancelled while its write waits (here on a conflicting uncommitted row)
    and asyncpg's cancel request is slow to arrive. The task must end either started *and*
    timed out at once (the poll never got it) or not started and still queued: never started
    for nobody until its whole timeout. So the clean-up runs only once the write has ended."""
    services = server.services
    run_id = await _start_queued(server, "slow-cancel")
    real_cancel = connect_utils._cancel

    async def slow_cancel(**kwargs: Any) -> None:
        await asyncio.sleep(0.5)  # a slow network path to the database
        await real_cancel(**kwargs)

    monkeypatch.setattr(connect_utils, "_cancel", slow_cancel)
    cleaned_up = asyncio.Event()
    real_expire = grants.expire_unclaimed

    async def expire(*args: Any, **kwargs: Any) -> None:
        await real_expire(*args, **kwargs)
        cleaned_up.set()

    monkeypatch.setattr(grants, "expire_unclaimed", expire)
    holder = await asyncpg.connect(database_url)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute(
            "INSERT INTO history_events (namespace, workflow_id, run_id, event_id, event_type, "
            "event_time, attributes) VALUES ('default', 'slow-cancel', $1, 3, 'X', now(), '{}')",
            run_id,
        )
        poll = asyncio.ensure_future(dispatch.dispatch(services, "default", "q", "a"))

        async def write_waits() -> bool | None:
            waiting = await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%upd_exec%'"
            )
            return True if waiting else None

        await eventually(write_waits, timeout=10, interval=0.01)
        poll.cancel()
        async with asyncio.timeout(10):
            await cleaned_up.wait()
        await transaction.rollback()
        with pytest.raises(asyncio.CancelledError):
            await poll
    finally:
        await holder.close()
    await asyncio.sleep(0.2)  # a write still in flight would commit now
    types = await _types(db, "slow-cancel")
    if "WorkflowTaskStarted" in types:
        timer = await db.fetchval(
            "SELECT fire_at - now() FROM timers WHERE workflow_id = 'slow-cancel' "
            "AND kind = 'workflow_task_timeout' AND ref_id = 3"
        )
        assert timer is None or timer < timedelta(seconds=1), "started for nobody"
    else:
        assert await db.fetchval("SELECT count(*) FROM tasks WHERE workflow_id = 'slow-cancel'")


async def test_a_dispatch_cancelled_after_its_write_gives_the_task_back_at_once(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The alone dispatch's write applied, and the poll is cancelled before the grant reaches
    it (here while the grant is assembled; in life also while the connection goes back to
    the pool): the task times out at once and the retry goes to the next poll."""
    await _start_queued(server, "cancelled-after", workflow_task_timeout=60)
    real_assemble = grants.assemble

    def assembled_then_cancelled(*args: Any, **kwargs: Any) -> Any:
        real_assemble(*args, **kwargs)
        raise asyncio.CancelledError

    monkeypatch.setattr(grants, "assemble", assembled_then_cancelled)
    with pytest.raises(asyncio.CancelledError):
        await dispatch.dispatch(server.services, "default", "q", "a")
    monkeypatch.undo()
    await _retried(server, "cancelled-after")


async def test_a_locked_dispatch_cancelled_once_committed_gives_the_task_back_at_once(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The locked dispatch committed, and the cancellation lands before the grant is
    returned (as during its COMMIT): the task times out at once."""
    await _start_queued(server, "cancelled-commit", workflow_task_timeout=60)
    real_in_transaction = store_pool.in_transaction

    async def committed_then_cancelled(*args: Any, **kwargs: Any) -> Any:
        await real_in_transaction(*args, **kwargs)
        raise asyncio.CancelledError

    monkeypatch.setattr(store_pool, "in_transaction", committed_then_cancelled)
    with pytest.raises(asyncio.CancelledError):
        await dispatch._dispatch_locked(server.services, "default", "q", "a", frozenset())
    monkeypatch.undo()
    await _retried(server, "cancelled-commit")


async def _retried(server: Server, workflow_id: str) -> None:
    """The run's first task, started for a poll that did not get it, is dispatched again to
    the next poll long before its 60 s timeout."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        stub = service_pb2_grpc.WorkflowServiceStub(channel)
        task = await stub.PollWorkflowTask(
            pb.PollWorkflowTaskRequest(task_queue="q", identity="b"), timeout=10
        )
    finally:
        await channel.close()
    assert task.workflow_execution.workflow_id == workflow_id
    assert task.attempt == 2


async def _start_queued(server: Server, workflow_id: str, workflow_task_timeout: int = 10) -> str:
    """Start a run whose first workflow task is queued (no poll waits); its run id."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        stub = service_pb2_grpc.WorkflowServiceStub(channel)
        timeout = Duration(seconds=workflow_task_timeout)
        started = await stub.StartWorkflow(
            start_request(workflow_id, workflow_task_timeout=timeout)
        )
    finally:
        await channel.close()
    return started.run_id


async def _types(db: asyncpg.Connection, workflow_id: str) -> list[str]:
    rows = await db.fetch(
        "SELECT event_type FROM history_events WHERE workflow_id = $1 ORDER BY event_id",
        workflow_id,
    )
    return [r["event_type"] for r in rows]
