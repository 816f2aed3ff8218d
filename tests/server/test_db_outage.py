"""A server on a Postgres of the test's own (``tests/postgres_process.py``) that crashes or is
killed under it: calls fail with UNAVAILABLE meanwhile and go through once it is back."""

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

from chronicle.protos.v1 import service_pb2 as pb
from chronicle.protos.v1 import service_pb2_grpc
from chronicle.server.app import Server
from chronicle.server.config import ServerConfig
from tests.postgres_process import PostgresProcess
from tests.server.conftest import (
    event_types,
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


async def history(stub: Any, workflow_id: str) -> list[str]:
    """The run's event types."""
    response = await stub.GetWorkflowHistory(pb.GetWorkflowHistoryRequest(workflow_id=workflow_id))
    return event_types(response.events)


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
