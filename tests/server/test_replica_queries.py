"""Queries across two in-process server replicas on one database (``pending_queries``).

``stub`` talks to the ``server`` fixture (A), ``stub_b`` to a second server on the same
database (B). Workflows are started and asked on B; pollers are on A unless a test says
otherwise (docs/decisions.md §20).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import asyncpg
import grpc
import pytest

from chronicle.history import wire
from chronicle.protos.v1 import service_pb2 as pb
from chronicle.protos.v1 import service_pb2_grpc
from chronicle.server.app import Server
from chronicle.server.engine import tasks as rows
from chronicle.server.store import notify
from tests.server.conftest import payload, payload_proto, running_server
from tests.server.test_queries import _started_and_idle, _take_query


def _ask(stub: Any, workflow_id: str, name: str = "status", timeout: float = 20) -> Any:
    return asyncio.ensure_future(
        stub.QueryWorkflow(
            pb.QueryWorkflowRequest(workflow_id=workflow_id, query_name=name), timeout=timeout
        )
    )


async def _taken(stub: Any, queue: str, identity: str) -> Any:
    """The next query task a poll on ``stub`` gets (15 s at most)."""
    return await asyncio.wait_for(_take_query(stub, queue=queue, identity=identity), 15)


def _answer(task: Any, value: Any) -> pb.RespondQueryTaskRequest:
    request = pb.RespondQueryTaskRequest(task_token=task.task_token)
    request.result.CopyFrom(payload_proto(value))
    return request


async def _rows(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM pending_queries"))


async def test_a_query_asked_on_b_is_taken_on_a_and_answered_on_either(
    stub: Any, stub_b: Any, db: asyncpg.Connection
) -> None:
    """The answer goes through the row from any replica; the first one wins, a second (or a
    late one, after the query ended) is NOT_FOUND; the asking replica deletes the row."""
    await _started_and_idle(stub_b, "rq-1", "rq1")
    asked = _ask(stub_b, "rq-1")
    task = await _taken(stub, "rq1", "worker-a")
    assert json.loads(task.task_token) == {"t": "query", "id": task.query.query_id}
    assert task.workflow_type == "wf"
    await stub.RespondQueryTask(_answer(task, "from A"))
    response = await asyncio.wait_for(asked, 10)
    assert wire.payload_from_proto(response.result) == payload("from A")
    for late in (stub, stub_b):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await late.RespondQueryTask(_answer(task, "late"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert await _rows(db) == 0

    # Answered on B, the replica that asked, for a query its poller did not take.
    asked = _ask(stub_b, "rq-1", "again")
    task = await _taken(stub, "rq1", "worker-a")
    await stub_b.RespondQueryTask(_answer(task, "via B"))
    response = await asyncio.wait_for(asked, 10)
    assert wire.payload_from_proto(response.result) == payload("via B")
    assert await _rows(db) == 0


async def test_each_hand_off_goes_to_one_poll_across_replicas(
    stub: Any, stub_b: Any, db: asyncpg.Connection
) -> None:
    """Pollers on both replicas, queries asked on both: every query reaches exactly one poll
    and gets its own answer."""
    await _started_and_idle(stub_b, "rq-many", "rqm")
    asked = [_ask(s, "rq-many", f"q{i}") for i in range(6) for s in (stub, stub_b)]
    seen: list[str] = []

    async def poller(s: Any, identity: str) -> None:
        while True:
            task = await s.PollWorkflowTask(
                pb.PollWorkflowTaskRequest(task_queue="rqm", identity=identity), timeout=10
            )
            if task.HasField("query"):
                seen.append(task.query.query_id)
                await s.RespondQueryTask(_answer(task, task.query.query_name))

    pollers = [
        asyncio.ensure_future(poller(s, f"{name}-{i}"))
        for i in range(2)
        for s, name in ((stub, "a"), (stub_b, "b"))
    ]
    try:
        responses = await asyncio.wait_for(asyncio.gather(*asked), 20)
    finally:
        for task in pollers:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
    answers = sorted(wire.payload_from_proto(r.result).data for r in responses)
    assert answers == sorted(json.dumps(f"q{i}").encode() for i in range(6) for _ in range(2))
    assert len(seen) == len(set(seen)) == 12
    assert await _rows(db) == 0


async def test_a_lost_worker_on_a_gives_back_bs_query_to_a_poller_on_b(
    stub: Any, stub_b: Any
) -> None:
    """Its session on A ends: A gives the claim back at once and a poller on B takes it, long
    before the 30 s a taken query waits for its answer."""
    await _started_and_idle(stub_b, "rq-lost", "rql")
    session = stub.WorkerSession(pb.WorkerSessionRequest(identity="doomed"))
    await session.read()
    asked = _ask(stub_b, "rq-lost", timeout=60)
    taken = await _taken(stub, "rql", "doomed")
    rescue = asyncio.ensure_future(_take_query(stub_b, queue="rql", identity="rescuer"))
    session.cancel()
    second = await asyncio.wait_for(rescue, 15)
    assert second.query.query_id == taken.query.query_id
    await stub_b.RespondQueryTask(_answer(second, "rescued"))
    response = await asyncio.wait_for(asked, 10)
    assert wire.payload_from_proto(response.result) == payload("rescued")


async def test_a_query_given_back_that_nobody_takes_fails_naming_the_lost_worker(
    stub: Any, stub_b: Any, db: asyncpg.Connection
) -> None:
    await _started_and_idle(stub_b, "rq-gone", "rqg")
    session = stub.WorkerSession(pb.WorkerSessionRequest(identity="gone"))
    await session.read()
    asked = _ask(stub_b, "rq-gone", timeout=3)
    await _taken(stub, "rqg", "gone")
    session.cancel()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await asked
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "worker 'gone': its session ended before it answered" in str(info.value.details())
    assert "no other worker took it since" in str(info.value.details())
    assert await _rows(db) == 0


async def test_a_poll_claims_only_after_an_offer_and_never_an_expired_row(
    server: Server, stub: Any, stub_b: Any, db: asyncpg.Connection
) -> None:
    """No offer announced: a poll looks at no row (the flag says so, no statement). A row
    past its deadline (its asker died) is never handed out, even when announced, and the
    next publication anywhere sweeps it."""
    remote = server.services.queries.remote
    empty = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="rqx", identity="w"), timeout=5
    )
    assert not empty.HasField("query")
    assert not remote.may_be_pending("default", "rqx")

    await db.execute(
        """INSERT INTO pending_queries (query_id, namespace, task_queue, workflow_id, run_id,
               workflow_type, name, args, validate_update, origin, pickup_by, deadline)
           VALUES ('dead', 'default', 'rqx', 'w', 'r', 'wf', 'status', '[]', false, 'gone',
                   now() - interval '1 minute', now() - interval '1 second')"""
    )
    key = notify.task_key(rows.WORKFLOW, "default", "rqx")
    await db.execute("SELECT pg_notify('chronicle_query_offer', $1)", key)
    for _ in range(50):  # the notification arrives
        if remote.may_be_pending("default", "rqx"):
            break
        await asyncio.sleep(0.02)
    assert remote.may_be_pending("default", "rqx")
    empty = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="rqx", identity="w"), timeout=5
    )
    assert not empty.HasField("query")
    assert not remote.may_be_pending("default", "rqx")

    await stub_b.StartWorkflow(
        pb.StartWorkflowRequest(
            workflow_id="rq-sweep", workflow_type="wf", task_queue="rqs", identity="client"
        )
    )
    with pytest.raises(grpc.aio.AioRpcError):  # nobody polls: published, then withdrawn
        await stub_b.QueryWorkflow(
            pb.QueryWorkflowRequest(workflow_id="rq-sweep", query_name="status"), timeout=1
        )
    for _ in range(250):  # B's call ends (and deletes its row) just after the client's
        if await _rows(db) == 0:
            break
        await asyncio.sleep(0.02)
    assert await _rows(db) == 0


async def test_a_query_for_a_poller_waiting_on_the_same_replica_stays_in_memory(
    stub: Any, db: asyncpg.Connection
) -> None:
    """The fast path: a poll of A already waits on the queue when A is asked, so A hands the
    query over in memory and writes no row (while the worker holds it, none exists)."""
    await _started_and_idle(stub, "rq-local", "rqlocal")
    poll = asyncio.ensure_future(_taken(stub, "rqlocal", "worker-a"))
    await asyncio.sleep(0.5)  # the poll waits
    asked = _ask(stub, "rq-local")
    task = await poll
    assert await _rows(db) == 0
    await stub.RespondQueryTask(_answer(task, "local"))
    response = await asyncio.wait_for(asked, 10)
    assert wire.payload_from_proto(response.result) == payload("local")


async def test_a_replica_started_after_the_offer_still_claims_it(
    database_url: str, stub_b: Any
) -> None:
    """A replica that was not listening when the query was announced: its first poll of the
    queue claims once anyway, and gets the query."""
    await _started_and_idle(stub_b, "rq-late-replica", "rqlr")
    asked = _ask(stub_b, "rq-late-replica")
    await asyncio.sleep(0.3)  # published (nobody polls), announced to A and B only
    async with running_server(database_url) as third:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{third.port}")
        try:
            stub_c = service_pb2_grpc.WorkflowServiceStub(channel)
            task = await _taken(stub_c, "rqlr", "worker-c")
            await stub_c.RespondQueryTask(_answer(task, "from C"))
        finally:
            await channel.close()
    response = await asyncio.wait_for(asked, 10)
    assert wire.payload_from_proto(response.result) == payload("from C")


async def _blocked_backend(db: asyncpg.Connection, statement: str) -> int:
    """The pid of the server backend whose ``statement`` waits on a lock (5 s at most)."""
    for _ in range(250):
        pid = await db.fetchval(
            """SELECT pid FROM pg_stat_activity
               WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()
                 AND position($1 IN query) > 0""",
            statement,
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.02)
    raise AssertionError(f"no backend waits on a lock in {statement!r}")


@pytest.mark.parametrize("ending", ["poll cancelled", "connection killed"])
async def test_a_claim_that_fails_leaves_the_offer_for_the_next_poll(
    database_url: str, stub: Any, stub_b: Any, db: asyncpg.Connection, ending: str
) -> None:
    """A's poll claims B's published query, but its statement never completes (the poll is
    cancelled, or its connection to Postgres is killed): the offer it was claiming is not
    used up, so A's next poll claims the query (it used to wait for another announcement
    that never came, and B failed with "no worker is polling" after its pickup time)."""
    await _started_and_idle(stub_b, "rq-claim-fails", "rqcf")
    asked = _ask(stub_b, "rq-claim-fails", timeout=30)
    for _ in range(250):  # published: nobody polls
        if await _rows(db) == 1:
            break
        await asyncio.sleep(0.02)
    lock = await asyncpg.connect(database_url)
    try:
        transaction = lock.transaction()
        await transaction.start()
        await lock.execute("LOCK TABLE pending_queries IN ACCESS EXCLUSIVE MODE")
        poll = stub.PollWorkflowTask(
            pb.PollWorkflowTaskRequest(task_queue="rqcf", identity="worker-a"), timeout=10
        )
        pid = await _blocked_backend(db, "WITH picked AS")
        if ending == "poll cancelled":
            poll.cancel()
        else:
            await db.execute("SELECT pg_terminate_backend($1)", pid)
        await asyncio.sleep(0.3)  # the claim's give-back waits on the lock too
        await transaction.rollback()
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
            await poll
    finally:
        await lock.close()
    task = await _taken(stub, "rqcf", "worker-a")
    await stub.RespondQueryTask(_answer(task, "claimed at last"))
    response = await asyncio.wait_for(asked, 10)
    assert wire.payload_from_proto(response.result) == payload("claimed at last")


@pytest.mark.parametrize("failed", ["publication", "publication and its withdrawal"])
async def test_a_query_whose_publication_failed_is_published_again(
    database_url: str, stub: Any, stub_b: Any, db: asyncpg.Connection, failed: str
) -> None:
    """B's statement publishing the query fails (its connection to Postgres is killed), and
    so, maybe, does the one that then makes sure no row exists: B publishes it again once
    the database answers, and a poller on A claims it (it used to stay in B's memory, or
    nowhere, and B failed with "no worker is polling" after its pickup time)."""
    await _started_and_idle(stub_b, "rq-republish", "rqrp")
    lock = await asyncpg.connect(database_url)
    try:
        transaction = lock.transaction()
        await transaction.start()
        await lock.execute("LOCK TABLE pending_queries IN ACCESS EXCLUSIVE MODE")
        asked = _ask(stub_b, "rq-republish", timeout=30)
        pid = await _blocked_backend(db, "WITH swept AS")
        await db.execute("SELECT pg_terminate_backend($1)", pid)
        if failed == "publication and its withdrawal":
            pid = await _blocked_backend(db, "AND taker IS NULL AND hand_offs = $2")
            await db.execute("SELECT pg_terminate_backend($1)", pid)
        await asyncio.sleep(0.3)
        await transaction.rollback()
    finally:
        await lock.close()
    task = await _taken(stub, "rqrp", "worker-a")
    await stub.RespondQueryTask(_answer(task, "published again"))
    response = await asyncio.wait_for(asked, 10)
    assert wire.payload_from_proto(response.result) == payload("published again")
    assert await _rows(db) == 0
