"""CallStream: unary methods multiplexed on one stream answer as the unary calls do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from chronicle.protos.v1 import service_pb2 as pb
from chronicle.protos.v1 import service_pb2_grpc
from chronicle.server.app import Server
from tests.server.conftest import start_request


class Streamed:
    """A raw CallStream: send calls by id, read replies as they come."""

    def __init__(self, stub: service_pb2_grpc.WorkflowServiceStub) -> None:
        self.call: Any = stub.CallStream()
        self.replies: dict[int, pb.StreamedReply] = {}
        self.order: list[int] = []

    async def send(self, call_id: int, method: str, request: Any, timeout: float = 10.0) -> None:
        """Send one call."""
        message = pb.StreamedCall(id=call_id, method=method, request=request.SerializeToString())
        message.timeout.FromMilliseconds(int(timeout * 1000))
        await self.call.write(message)

    async def cancel(self, call_id: int) -> None:
        """Cancel a call in flight."""
        await self.call.write(pb.StreamedCall(id=call_id, cancel=True))

    async def reply(self, call_id: int) -> pb.StreamedReply:
        """Read replies until the one for ``call_id`` arrived."""
        async with asyncio.timeout(10):
            while call_id not in self.replies:
                reply = await self.call.read()
                assert reply is not grpc.aio.EOF
                self.replies[reply.id] = reply
                self.order.append(reply.id)
        return self.replies[call_id]


@pytest.fixture
async def streamed(stub: service_pb2_grpc.WorkflowServiceStub) -> AsyncIterator[Streamed]:
    """A CallStream open on the test server."""
    stream = Streamed(stub)
    try:
        yield stream
    finally:
        stream.call.cancel()


async def test_a_streamed_call_answers_what_the_unary_call_answers(
    stub: service_pb2_grpc.WorkflowServiceStub, streamed: Streamed
) -> None:
    await streamed.send(1, "StartWorkflow", start_request("s-1"))
    reply = await streamed.reply(1)
    assert reply.code == 0
    started = pb.StartWorkflowResponse.FromString(reply.response)
    assert started.started
    assert started.run_id

    request = pb.DescribeWorkflowRequest(workflow_id="s-1")
    await streamed.send(2, "DescribeWorkflow", request)
    described = await streamed.reply(2)
    streamed_description = pb.DescribeWorkflowResponse.FromString(described.response)
    assert streamed_description == await stub.DescribeWorkflow(request)
    assert streamed_description.info.run_id == started.run_id


async def test_errors_come_back_as_the_unary_status(
    stub: service_pb2_grpc.WorkflowServiceStub, streamed: Streamed
) -> None:
    missing = pb.DescribeWorkflowRequest(workflow_id="nobody")
    await streamed.send(1, "DescribeWorkflow", missing)
    reply = await streamed.reply(1)
    with pytest.raises(grpc.aio.AioRpcError) as unary:
        await stub.DescribeWorkflow(missing)
    assert reply.code == grpc.StatusCode.NOT_FOUND.value[0] == unary.value.code().value[0]
    assert reply.message == unary.value.details()
    assert "nobody" in reply.message

    await streamed.send(2, "StartWorkflow", pb.StartWorkflowRequest(workflow_type="wf"))
    reply = await streamed.reply(2)
    assert reply.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "workflow_id" in reply.message


async def test_bad_calls_are_refused_by_name_and_change_nothing(
    stub: service_pb2_grpc.WorkflowServiceStub, streamed: Streamed
) -> None:
    await streamed.send(1, "WorkerSession", pb.WorkerSessionRequest(identity="w"))
    await streamed.send(2, "NoSuchMethod", pb.DescribeWorkflowRequest())
    await streamed.call.write(pb.StreamedCall(id=3, method="StartWorkflow", request=b"\xff\xff"))
    session, unknown, garbage = [await streamed.reply(i) for i in (1, 2, 3)]
    assert session.code == unknown.code == grpc.StatusCode.UNIMPLEMENTED.value[0]
    assert "'WorkerSession' is not a unary WorkflowService method" in session.message
    assert "'NoSuchMethod'" in unknown.message
    assert garbage.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "not a valid StartWorkflowRequest" in garbage.message
    listed = await stub.ListWorkflows(pb.ListWorkflowsRequest())
    assert not listed.executions
    # the stream survives bad calls
    await streamed.send(4, "StartWorkflow", start_request("s-after"))
    assert (await streamed.reply(4)).code == 0


async def test_calls_on_one_stream_run_concurrently(streamed: Streamed) -> None:
    """A long poll in flight does not hold up a later call on the same stream."""
    poll = pb.PollWorkflowTaskRequest(task_queue="q", identity="w")
    await streamed.send(1, "PollWorkflowTask", poll, timeout=3.0)
    await streamed.send(2, "StartWorkflow", start_request("s-2"))
    await streamed.reply(2)
    task = pb.PollWorkflowTaskResponse.FromString((await streamed.reply(1)).response)
    assert streamed.order[0] == 2
    assert task.workflow_execution.workflow_id == "s-2"  # the waiting poll got the new task


async def test_a_cancelled_long_poll_takes_no_task(
    stub: service_pb2_grpc.WorkflowServiceStub, streamed: Streamed
) -> None:
    """As when a unary poll's caller goes away: the task goes to the next poller instead."""
    poll = pb.PollWorkflowTaskRequest(task_queue="q", identity="gone")
    await streamed.send(1, "PollWorkflowTask", poll, timeout=3.0)
    await asyncio.sleep(0.2)  # let the poll start waiting on the server
    await streamed.cancel(1)
    await streamed.send(2, "StartWorkflow", start_request("s-3"))
    assert (await streamed.reply(2)).code == 0
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity="here"), timeout=5
    )
    assert task.workflow_execution.workflow_id == "s-3"
    assert 1 not in streamed.replies


async def test_a_stopping_server_refuses_new_calls_and_ends_the_stream(
    server: Server, streamed: Streamed
) -> None:
    """As unary calls are refused then: callers reconnect and back off instead of polling."""
    poll = pb.PollWorkflowTaskRequest(task_queue="q", identity="w")
    await streamed.send(1, "PollWorkflowTask", poll, timeout=3.0)
    await asyncio.sleep(0.2)  # the poll waits on the server
    stopping = asyncio.create_task(server.stop(grace=5.0))
    ended = pb.PollWorkflowTaskResponse.FromString((await streamed.reply(1)).response)
    assert not ended.task_token  # the long poll ended at once, empty
    await streamed.send(2, "StartWorkflow", start_request("s-late"))
    refused = await streamed.reply(2)
    assert refused.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "shutting down" in refused.message
    async with asyncio.timeout(5):
        assert await streamed.call.read() is grpc.aio.EOF
    await stopping
