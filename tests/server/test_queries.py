"""Queries are routed to a polling worker as query-only tasks and answered in memory."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from chronicle.history import wire
from chronicle.protos.v1 import common_pb2
from chronicle.protos.v1 import service_pb2 as pb
from tests.server.conftest import payload, payload_proto, start_request


async def _answer_one(stub, *, fail: bool = False, queue: str = "q"):
    while True:  # ignores (drops) real workflow tasks: they time out and come back
        task = await stub.PollWorkflowTask(
            pb.PollWorkflowTaskRequest(task_queue=queue, identity="w"), timeout=5
        )
        if task.HasField("query"):
            break
    request = pb.RespondQueryTaskRequest(task_token=task.task_token)
    if fail:
        request.failure.CopyFrom(common_pb2.Failure(message="no such query"))
    else:
        request.result.CopyFrom(payload_proto([task.query.query_name, len(task.query.args)]))
    await stub.RespondQueryTask(request)
    return task


async def test_query_answered_by_a_worker(stub) -> None:
    started = await stub.StartWorkflow(start_request("q-1"))
    first = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity="w"), timeout=5
    )
    await stub.CompleteWorkflowTask(pb.CompleteWorkflowTaskRequest(task_token=first.task_token))
    worker = asyncio.ensure_future(_answer_one(stub))
    response = await stub.QueryWorkflow(
        pb.QueryWorkflowRequest(workflow_id="q-1", query_name="status", args=[payload_proto(1)]),
        timeout=10,
    )
    assert wire.payload_from_proto(response.result) == payload(["status", 1])
    task = await worker
    assert not task.events
    assert task.workflow_type == "wf"
    assert task.workflow_execution.run_id == started.run_id
    # The query wrote nothing.
    history = await stub.GetWorkflowHistory(pb.GetWorkflowHistoryRequest(workflow_id="q-1"))
    assert [e.event_type for e in history.events][-1] == "WorkflowTaskCompleted"


async def test_query_failure_and_timeouts(stub) -> None:
    await stub.StartWorkflow(start_request("q-2", task_queue="nobody"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.QueryWorkflow(
            pb.QueryWorkflowRequest(workflow_id="q-2", query_name="status"), timeout=1.0
        )
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    await stub.StartWorkflow(start_request("q-3", task_queue="q3"))
    worker = asyncio.ensure_future(_answer_one(stub, fail=True, queue="q3"))
    response = await stub.QueryWorkflow(
        pb.QueryWorkflowRequest(workflow_id="q-3", query_name="nope"), timeout=10
    )
    assert not response.HasField("result")
    assert response.failure.message == "no such query"
    task = await worker
    with pytest.raises(grpc.aio.AioRpcError) as info:  # answered twice
        await stub.RespondQueryTask(pb.RespondQueryTaskRequest(task_token=task.task_token))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
