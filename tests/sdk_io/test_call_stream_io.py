"""The SDK's calls on the CallStream: a broken stream is reopened and the calls in flight are
retried; with ``CHRONICLE_CALL_STREAM=0`` every call is a plain unary call."""

from __future__ import annotations

import asyncio

import pytest

from chronicle.protos.v1 import common_pb2, service_pb2
from chronicle.sdk._grpc import RPCError
from chronicle.sdk.activity import activity
from chronicle.sdk.client import Client
from chronicle.sdk.errors import WorkflowNotFound
from chronicle.sdk.worker import Worker
from chronicle.sdk.workflow import workflow
from chronicle.server.app import Server
from tests.sdk_io.helpers import free_port, start_server


@activity
async def double(x: int) -> int:
    """Twice ``x``."""
    return 2 * x


@workflow
async def doubles(x: int) -> int:
    """One activity."""
    return await workflow.execute_activity(double, x)


async def test_a_call_in_flight_when_the_stream_breaks_is_retried_on_a_new_one(
    database_url: str,
) -> None:
    """The result long poll is on the stream when the server stops; it is retried (UNAVAILABLE)
    and answered on a new stream once a server is back on the port."""
    port = free_port()
    server: Server | None = await start_server(database_url, port)
    client = await Client.connect(f"127.0.0.1:{port}", retry_timeout=20.0)
    try:
        handle = await client.start(doubles, 21, id="cs-1", task_queue="cs")
        waiting = asyncio.create_task(handle.result())
        await asyncio.sleep(0.2)  # the long poll is in flight on the stream
        assert server is not None
        await server.stop(grace=0)
        server = None
        await asyncio.sleep(0.3)
        assert not waiting.done()  # retrying, not failing
        server = await start_server(database_url, port)
        async with Worker(client, task_queue="cs", workflows=[doubles], activities=[double]):
            assert await asyncio.wait_for(waiting, 20) == 42
    finally:
        await client.close()
        if server is not None:
            await server.stop(grace=0)


async def test_with_the_stream_off_calls_are_unary(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHRONICLE_CALL_STREAM", "0")
    client = await Client.connect(f"127.0.0.1:{server.port}")
    try:
        assert client.connection.uses_call_stream is False
        async with Worker(client, task_queue="cs", workflows=[doubles], activities=[double]):
            handle = await client.start(doubles, 4, id="cs-2", task_queue="cs")
            assert await asyncio.wait_for(handle.result(), 20) == 8
    finally:
        await client.close()


async def test_an_oversized_request_fails_alone_and_the_stream_goes_on(client: Client) -> None:
    """Sent, it would break the stream every call shares (and be retried as UNAVAILABLE)."""
    huge = service_pb2.SignalWorkflowRequest(
        workflow_id="nobody", signal_name="s", input=[common_pb2.Payload(data=b"x" * (65 << 20))]
    )
    with pytest.raises(RPCError) as refused:
        await client.connection.call("SignalWorkflow", huge, retry_timeout=0)
    assert refused.value.code == "RESOURCE_EXHAUSTED"
    assert "over the 67108864-byte message limit" in str(refused.value)
    with pytest.raises(WorkflowNotFound):
        await client.get_handle("nobody").describe()


async def test_calls_in_flight_when_the_connection_closes_are_cancelled(server: Server) -> None:
    client = await Client.connect(f"127.0.0.1:{server.port}")
    poll = service_pb2.PollWorkflowTaskRequest(task_queue="idle", identity="w")
    polling = asyncio.create_task(client.connection.call("PollWorkflowTask", poll))
    await asyncio.sleep(0.2)  # the poll waits on the server
    await client.close()
    with pytest.raises(RPCError) as cancelled:
        await polling
    assert cancelled.value.code == "CANCELLED"
