"""The activity half of ``Worker`` against a fake server."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from chronicle.history import wire
from chronicle.history.payloads import from_payload, to_payload
from chronicle.protos.v1 import common_pb2, service_pb2
from chronicle.sdk import activity as activity_api
from chronicle.sdk.activity import activity
from chronicle.sdk.client import Client
from chronicle.sdk.errors import ApplicationError
from chronicle.sdk.worker import Worker
from tests.sdk_io.fake_server import start_fake
from tests.sdk_io.test_client_io import free_port


@dataclass
class Item:
    sku: str
    qty: int


@activity
async def reserve(item: Item, order_id: str) -> Item:
    assert activity_api.info().activity_type == "reserve"
    return Item(item.sku + "-" + order_id, item.qty * 2)


@activity
async def refuse(order_id: str) -> None:
    raise ApplicationError(f"no {order_id}", type="OutOfStock", non_retryable=True)


@activity
def crunch(n: int) -> int:
    for step in range(200):
        activity_api.heartbeat(step)
        time.sleep(0.02)
    return n


@activity
async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


def task(
    activity_type: str, *args: Any, token: bytes = b"tok-1", **fields: Any
) -> service_pb2.PollActivityTaskResponse:
    return service_pb2.PollActivityTaskResponse(
        task_token=token,
        activity_type=activity_type,
        activity_id="1",
        attempt=1,
        workflow_type="wf",
        task_queue="q",
        workflow_execution=common_pb2.WorkflowExecution(workflow_id="w", run_id="r"),
        input=[wire.payload_to_proto(to_payload(a)) for a in args],
        **fields,
    )


@pytest.fixture
async def fake() -> Any:
    server, service, port = await start_fake()
    client = await Client.connect(f"127.0.0.1:{port}", retry_timeout=5.0)
    yield service, client
    await client.close()
    await server.stop(None)


async def test_an_async_activity_runs_with_decoded_arguments(fake: Any) -> None:
    service, client = fake
    await service.activity_tasks.put(task("reserve", Item("sku", 2), "o-1"))
    async with Worker(client, task_queue="q", activities=[reserve]):
        [done] = await service.wait_for("CompleteActivityTask")
    assert done.task_token == b"tok-1"
    assert from_payload(wire.payload_from_proto(done.result), Item) == Item("sku-o-1", 4)
    assert service.requests["PollActivityTask"][0].identity.count(":") == 2


async def test_an_unknown_activity_type_fails_retryably_naming_the_known_ones(fake: Any) -> None:
    service, client = fake
    await service.activity_tasks.put(task("nope"))
    async with Worker(client, task_queue="q", activities=[reserve, refuse]):
        [failed] = await service.wait_for("FailActivityTask")
    assert "'nope'" in failed.failure.message
    assert "refuse, reserve" in failed.failure.message
    assert not failed.failure.non_retryable


async def test_an_application_error_becomes_a_failure(fake: Any) -> None:
    service, client = fake
    await service.activity_tasks.put(task("refuse", "o-9"))
    async with Worker(client, task_queue="q", activities=[refuse]):
        [failed] = await service.wait_for("FailActivityTask")
    assert failed.failure.type == "OutOfStock"
    assert failed.failure.non_retryable
    assert failed.failure.message == "no o-9"


async def test_heartbeats_are_sent_and_cancellation_reaches_a_sync_activity(fake: Any) -> None:
    service, client = fake

    async def heartbeat(request: Any, context: Any) -> Any:
        cancel = len(service.requests["HeartbeatActivityTask"]) >= 2
        return service_pb2.HeartbeatActivityTaskResponse(cancel_requested=cancel)

    service.handlers["HeartbeatActivityTask"] = heartbeat
    await service.activity_tasks.put(task("crunch", 7, heartbeat_timeout={"nanos": 250_000_000}))
    async with Worker(client, task_queue="q", activities=[crunch]):
        [failed] = await service.wait_for("FailActivityTask")
    assert failed.failure.kind == "cancelled"
    beats = service.requests["HeartbeatActivityTask"]
    assert from_payload(wire.payload_from_proto(beats[0].details[0])) == 0
    assert 2 <= len(beats) < 20  # throttled: not one per heartbeat() call


async def test_a_stale_completion_is_ignored_and_the_worker_goes_on(fake: Any) -> None:
    service, client = fake

    async def stale(request: Any, context: Any) -> Any:
        if request.task_token == b"tok-1":
            await context.abort(grpc.StatusCode.NOT_FOUND, "task is stale")
        return service_pb2.CompleteActivityTaskResponse()

    service.handlers["CompleteActivityTask"] = stale
    await service.activity_tasks.put(task("slow", 0.0, token=b"tok-1"))
    await service.activity_tasks.put(task("slow", 0.0, token=b"tok-2"))
    async with Worker(client, task_queue="q", activities=[slow]):
        done = await service.wait_for("CompleteActivityTask", 2)
    assert [d.task_token for d in done] == [b"tok-1", b"tok-2"]


async def test_shutdown_lets_a_running_activity_finish(fake: Any) -> None:
    service, client = fake
    await service.activity_tasks.put(task("slow", 0.5))
    async with Worker(client, task_queue="q", activities=[slow], graceful_shutdown_timeout=5):
        await service.wait_for("PollActivityTask", 2)
    [done] = service.requests["CompleteActivityTask"]
    assert from_payload(wire.payload_from_proto(done.result)) == "done"


async def test_a_worker_survives_a_server_restart() -> None:
    port = free_port()
    server, service, _ = await start_fake(port)
    client = await Client.connect(f"127.0.0.1:{port}", retry_timeout=30.0)
    try:
        async with Worker(client, task_queue="q", activities=[slow]):
            await service.wait_for("PollActivityTask")
            await server.stop(None)
            await asyncio.sleep(1.0)
            server, service, _ = await start_fake(port)
            await service.activity_tasks.put(task("slow", 0.0))
            [done] = await service.wait_for("CompleteActivityTask", timeout=20)
        assert done.task_token == b"tok-1"
    finally:
        await client.close()
        await server.stop(None)


def test_a_worker_rejects_undecorated_functions() -> None:
    async def plain() -> None: ...

    with pytest.raises(TypeError, match="not decorated with @activity"):
        Worker(Client.__new__(Client), task_queue="q", activities=[plain])
