"""Dispatching queued workflow tasks (``dispatch.py``): the alone path (peek, one guarded
write) and the locked path it hands over to; each task is started exactly once, also when two
servers dispatch the same queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import grpc
import pytest

from chronicle.protos.v1 import service_pb2 as pb
from chronicle.protos.v1 import service_pb2_grpc
from chronicle.server.app import Server
from chronicle.server.engine import dispatch
from chronicle.server.store import sql
from chronicle.server.store.rows import RunKey
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
