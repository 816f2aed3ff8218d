"""Server test fixtures: an in-process server on a fresh database, and a gRPC stub to it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
import pytest

from chronicle.history import codec, commands, wire
from chronicle.history.values import Payload, RetryPolicy
from chronicle.protos.v1 import service_pb2 as pb
from chronicle.protos.v1 import service_pb2_grpc
from chronicle.server.app import Server
from chronicle.server.config import ServerConfig


@contextlib.asynccontextmanager
async def running_server(database_url: str) -> AsyncIterator[Server]:
    """A started server on ``database_url``, port 0; stopped afterwards."""
    instance = Server(
        ServerConfig(
            database_url=database_url, port=0, poll_timeout=5.0, sticky_timeout=timedelta(seconds=1)
        )
    )
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop(grace=1.0)


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[Server]:
    """A started server on a fresh database, port 0; stopped afterwards."""
    async with running_server(database_url) as instance:
        yield instance


@contextlib.asynccontextmanager
async def stub_of(instance: Server) -> AsyncIterator[service_pb2_grpc.WorkflowServiceStub]:
    """A gRPC stub connected to ``instance``, its channel closed afterwards."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{instance.port}")
    try:
        yield service_pb2_grpc.WorkflowServiceStub(channel)
    finally:
        await channel.close()


@pytest.fixture
async def stub(server: Server) -> AsyncIterator[service_pb2_grpc.WorkflowServiceStub]:
    """A gRPC stub connected to ``server``."""
    async with stub_of(server) as connected:
        yield connected


@pytest.fixture
async def other(database_url: str, server: Server) -> AsyncIterator[Server]:
    """A second server (replica) on the ``server`` fixture's database."""
    async with running_server(database_url) as instance:
        yield instance


@pytest.fixture
async def stub_b(other: Server) -> AsyncIterator[service_pb2_grpc.WorkflowServiceStub]:
    """A gRPC stub connected to the second server (``other``)."""
    async with stub_of(other) as connected:
        yield connected


@pytest.fixture
async def db(database_url: str, server: Server) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the server's (migrated) database, for assertions."""
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


def payload(value: Any) -> Payload:
    """A JSON payload."""
    return Payload(data=json.dumps(value).encode())


def payload_proto(value: Any) -> Any:
    """A JSON payload as its proto."""
    return wire.payload_to_proto(payload(value))


def command_protos(*items: commands.Command) -> list[Any]:
    """Commands as wire messages."""
    return [wire.command_to_proto(c) for c in items]


def start_request(workflow_id: str, **extra: Any) -> pb.StartWorkflowRequest:
    """A StartWorkflow request on task queue ``q`` for type ``wf``."""
    fields: dict[str, Any] = {
        "workflow_id": workflow_id,
        "workflow_type": "wf",
        "task_queue": "q",
        "identity": "client",
    }
    fields.update(extra)
    return pb.StartWorkflowRequest(**fields)


def event_types(events: Any) -> list[str]:
    """The type names of wire events."""
    return [e.event_type for e in events]


def attributes(event: Any) -> Any:
    """A wire event's decoded attributes."""
    return codec.decode_attributes(event.event_type, event.attributes)


def activity_command(seq: int) -> commands.ScheduleActivity:
    """Activity ``a<seq>`` of type ``act``: a start-to-close far beyond any wait of these tests,
    retried 10 ms after a failed attempt."""
    return commands.ScheduleActivity(
        seq=seq,
        activity_id=f"a{seq}",
        activity_type="act",
        start_to_close_timeout=timedelta(seconds=120),
        retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=10)),
    )


async def lock_waiters(db: Any, count: int) -> None:
    """Until ``count`` backends wait on a lock."""
    for _ in range(500):
        waiting = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        )
        if waiting >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {count} backends waiting on a lock")
