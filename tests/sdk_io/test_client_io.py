"""Client I/O against a fake server: encoding, retries, error mapping, result decoding."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from chronicle.history import wire
from chronicle.history.events import Event, WorkflowStarted
from chronicle.history.payloads import PayloadEncodingError, to_payload
from chronicle.history.values import Failure
from chronicle.protos.v1 import service_pb2
from chronicle.sdk._grpc import InvalidArgumentError, ServerUnavailableError, UnimplementedError
from chronicle.sdk.client import Client
from chronicle.sdk.errors import (
    ApplicationError,
    WorkflowAlreadyStarted,
    WorkflowFailed,
    WorkflowNotFound,
)
from chronicle.sdk.workflow import workflow
from tests.sdk_io.fake_server import FakeService, start_fake


@dataclass
class Receipt:
    order_id: str
    cents: int


@workflow
async def checkout(order_id: str, cents: int) -> Receipt:
    return Receipt(order_id, cents)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def fake() -> Any:
    server, service, port = await start_fake()
    client = await Client.connect(f"127.0.0.1:{port}", retry_timeout=5.0)
    yield service, client
    await client.close()
    await server.stop(None)


def _abort(code: grpc.StatusCode, message: str) -> Any:
    async def handler(request: Any, context: Any) -> Any:
        await context.abort(code, message)

    return handler


async def test_argument_encoding_error_names_the_argument_and_sends_nothing(fake: Any) -> None:
    service, client = fake
    with pytest.raises(PayloadEncodingError, match=r"argument 1 of workflow 'checkout'"):
        await client.start(checkout, "o-1", object(), id="o-1", task_queue="q")
    assert service.requests["StartWorkflow"] == []


async def test_start_sends_the_request_and_returns_a_handle(fake: Any) -> None:
    service, client = fake

    async def start(request: Any, context: Any) -> Any:
        return service_pb2.StartWorkflowResponse(run_id="run-1", started=True)

    service.handlers["StartWorkflow"] = start
    handle = await client.start(
        checkout,
        "o-1",
        1299,
        id="order-1",
        task_queue="orders",
        execution_timeout=60,
        memo={"who": "me"},
    )
    assert (handle.id, handle.run_id) == ("order-1", "run-1")
    request = service.requests["StartWorkflow"][0]
    assert request.workflow_type == "checkout"
    assert request.task_queue == "orders"
    assert [p.data for p in request.input] == [b'"o-1"', b"1299"]
    assert request.request_id
    assert request.execution_timeout.seconds == 60
    assert request.memo["who"].data == b'"me"'


async def test_a_retried_start_reuses_its_request_id(fake: Any) -> None:
    service, client = fake
    calls = 0

    async def flaky(request: Any, context: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return service_pb2.StartWorkflowResponse(run_id="run-1", started=True)

    service.handlers["StartWorkflow"] = flaky
    await client.start("checkout", "o-1", 1, id="order-1", task_queue="orders")
    first, second = service.requests["StartWorkflow"]
    assert first.request_id == second.request_id


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.NOT_FOUND, WorkflowNotFound),
        (grpc.StatusCode.ALREADY_EXISTS, WorkflowAlreadyStarted),
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
        (grpc.StatusCode.UNIMPLEMENTED, UnimplementedError),
    ],
)
async def test_status_codes_map_to_sdk_errors(
    fake: Any, code: grpc.StatusCode, error: type[Exception]
) -> None:
    service, client = fake
    service.handlers["SignalWorkflow"] = _abort(code, "signal_name: must not be empty")
    with pytest.raises(error):
        await client.get_handle("order-1").signal("", 1)


async def test_invalid_argument_keeps_the_servers_message(fake: Any) -> None:
    service, client = fake
    service.handlers["StartWorkflow"] = _abort(
        grpc.StatusCode.INVALID_ARGUMENT, "task_queue: must not be empty"
    )
    with pytest.raises(ValueError, match="task_queue: must not be empty"):
        await client.start("checkout", id="x", task_queue="")


async def test_result_polls_until_closed_and_decodes_with_the_return_hint(fake: Any) -> None:
    service, client = fake
    answers = [
        service_pb2.GetWorkflowResultResponse(closed=False),
        service_pb2.GetWorkflowResultResponse(
            closed=True,
            status="completed",
            run_id="run-1",
            result=wire.payload_to_proto(to_payload(Receipt("o-1", 5))),
        ),
    ]

    async def result(request: Any, context: Any) -> Any:
        return answers.pop(0)

    async def start(request: Any, context: Any) -> Any:
        return service_pb2.StartWorkflowResponse(run_id="run-1", started=True)

    service.handlers["GetWorkflowResult"] = result
    service.handlers["StartWorkflow"] = start
    handle = await client.start(checkout, "o-1", 5, id="o-1", task_queue="q")
    assert await handle.result() == Receipt("o-1", 5)
    assert service.requests["GetWorkflowResult"][0].follow_runs


async def test_failed_result_raises_workflow_failed_with_the_cause(fake: Any) -> None:
    service, client = fake

    async def result(request: Any, context: Any) -> Any:
        failure = Failure(message="card declined", type="Declined")
        return service_pb2.GetWorkflowResultResponse(
            closed=True, status="failed", run_id="r", failure=wire.failure_to_proto(failure)
        )

    service.handlers["GetWorkflowResult"] = result
    with pytest.raises(WorkflowFailed) as info:
        await client.get_handle("o-1").result()
    assert isinstance(info.value.cause, ApplicationError)
    assert info.value.cause.type == "Declined"
    assert "card declined" in str(info.value)


async def test_history_reads_every_page(fake: Any) -> None:
    service, client = fake
    from datetime import UTC, datetime

    events = [
        Event(
            id=i,
            time=datetime.now(UTC),
            attributes=WorkflowStarted(workflow_type="t", task_queue="q"),
        )
        for i in range(1, 6)
    ]

    async def history(request: Any, context: Any) -> Any:
        start = max(request.first_event_id, 1) - 1
        page = events[start : start + 2]
        return service_pb2.GetWorkflowHistoryResponse(
            events=[wire.event_to_proto(e) for e in page],
            run_id="r",
            closed=start + 2 >= len(events),
        )

    service.handlers["GetWorkflowHistory"] = history
    got = await client.get_handle("o-1").history()
    assert [e.id for e in got] == [1, 2, 3, 4, 5]


async def test_calls_wait_for_a_server_that_comes_up_late() -> None:
    port = free_port()
    client = await Client.connect(f"127.0.0.1:{port}", lazy=True, retry_timeout=20.0)
    holder: dict[str, Any] = {}

    async def late_server() -> None:
        await asyncio.sleep(1.0)
        server, service, _ = await start_fake(port)

        async def start(request: Any, context: Any) -> Any:
            return service_pb2.StartWorkflowResponse(run_id="run-late", started=True)

        service.handlers["StartWorkflow"] = start
        holder["server"] = server

    starter = asyncio.create_task(late_server())
    try:
        handle = await client.start("checkout", id="o-1", task_queue="q")
        assert handle.run_id == "run-late"
    finally:
        await starter
        await client.close()
        await holder["server"].stop(None)


async def test_connect_to_nothing_fails_with_a_clear_message() -> None:
    port = free_port()
    with pytest.raises(
        ServerUnavailableError, match=f"cannot reach the Chronicle server at 127.0.0.1:{port}"
    ):
        await Client.connect(f"127.0.0.1:{port}", connect_timeout=0.5)


def test_fake_service_answers_every_rpc() -> None:
    assert "PollWorkflowTask" in dir(FakeService())
