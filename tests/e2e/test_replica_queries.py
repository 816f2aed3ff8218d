"""Queries and update validations across two server replicas on one database.

The worker polls one replica (``server``), the client asks the other (``replica``): the query
is written to ``pending_queries`` by the asking replica and claimed by the worker's poll on
the other (docs/decisions.md §20). Each wait is bounded well below the 30 s a taken query
waits for its answer, so none of these passes by waiting out a timeout.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from chronicle import ApplicationError, RPCError
from tests.e2e import replica_workflows as wf
from tests.e2e.processes import ManagedProcess, ServerProcess, start_worker
from tests.e2e.query_workflows import STALL_ENV
from tests.e2e.test_crash import wait_for_events
from tests.e2e.test_query_crash import _created

MODULE = "tests.e2e.replica_workflows"


async def _rows_left(database_url: str) -> int:
    """How many ``pending_queries`` rows remain (every finished query deletes its own)."""
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pending_queries"))
    finally:
        await conn.close()


async def test_a_query_asked_on_one_replica_is_answered_by_a_worker_on_another(
    server: ServerProcess, replica_client: Any, database_url: str
) -> None:
    worker = start_worker(server.address, MODULE, "rq-query")
    try:
        handle = await replica_client.start(wf.tally, id="rq-query", task_queue="rq-query")
        await wait_for_events(handle, "WorkflowTaskCompleted", 1)
        for _ in range(3):
            assert await asyncio.wait_for(handle.query("total"), 20) == 0
        assert await _rows_left(database_url) == 0
    finally:
        worker.kill()


async def test_an_update_validated_by_a_worker_on_another_replica(
    server: ServerProcess, replica_client: Any, database_url: str
) -> None:
    """Accepted and rejected by the validator of a worker polling the other replica; the
    accepted update's result comes back, the rejected one writes nothing."""
    worker = start_worker(server.address, MODULE, "rq-update")
    try:
        handle = await replica_client.start(wf.tally, id="rq-update", task_queue="rq-update")
        assert await asyncio.wait_for(handle.update("add", 5), 20) == 5
        before = await handle.history()
        with pytest.raises(ApplicationError, match="cannot add -1") as info:
            await asyncio.wait_for(handle.update("add", -1), 20)
        assert info.value.type == "NotPositive"
        assert await handle.history() == before
        assert await asyncio.wait_for(handle.update("add", 2), 20) == 7
        assert await asyncio.wait_for(handle.query("total"), 20) == 7
        await handle.signal("finish")
        assert await asyncio.wait_for(handle.result(), 30) == 7
        accepted = [e for e in await handle.history() if e.type == "UpdateAccepted"]
        assert len(accepted) == 2
        assert await _rows_left(database_url) == 0
    finally:
        worker.kill()


async def test_with_no_worker_on_any_replica_the_pickup_error_is_unchanged(
    server: ServerProcess, replica_client: Any, database_url: str
) -> None:
    """No worker polls the queue on either replica: the query and the update still fail with
    the pickup error (5 s), not the 30 s answer timeout, and leave no row behind."""
    handle = await replica_client.start(wf.tally, id="rq-nobody", task_queue="rq-nobody")
    before = await handle.history()
    for call in (handle.query("total"), handle.update("add", 1)):
        with pytest.raises(RPCError, match="no worker is polling task queue 'rq-nobody'") as info:
            await asyncio.wait_for(call, 20)
        assert info.value.code == "FAILED_PRECONDITION"
    assert await handle.history() == before
    assert await _rows_left(database_url) == 0


async def test_a_worker_killed_holding_another_replicas_query_is_replaced_at_once(
    server: ServerProcess,
    replica: ServerProcess,
    replica_client: Any,
    tmp_path: Path,
    database_url: str,
) -> None:
    """The first worker (polling ``server``) claims the query asked on ``replica`` and stalls
    in the handler; it is SIGKILLed. Its session on ``server`` breaks, ``server`` gives the
    claim back, and a second worker, started then and polling ``replica``, answers, long
    before the 30 s a taken query waits for its answer (a claim not given back would hold the
    query until then)."""
    marker = tmp_path / "taken"
    first = start_worker(server.address, MODULE, "rq-crash", **{STALL_ENV: str(marker)})
    second: ManagedProcess | None = None
    try:
        handle = await replica_client.start(wf.tally, id="rq-crash", task_queue="rq-crash")
        await wait_for_events(handle, "WorkflowTaskCompleted", 1)
        query = asyncio.ensure_future(handle.query("total"))  # the client's deadline: 60 s
        await _created(marker, 30)  # the first worker holds the query
        # Killed at once (an SDK may give up on a stalled handler after a few seconds).
        first.kill()
        argv = [sys.executable, "-m", "chronicle", "worker", MODULE, "--task-queue"]
        second = ManagedProcess("worker", [*argv, "rq-crash", "--address", replica.address])
        second.start("worker started")
        assert await asyncio.wait_for(query, 15) == 0
        assert await _rows_left(database_url) == 0
        await handle.signal("finish")
        assert await asyncio.wait_for(handle.result(), 30) == 0
    finally:
        first.kill()
        if second is not None:
            second.kill()
