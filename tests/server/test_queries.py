"""Queries are routed to a polling worker as query-only tasks and answered in memory."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from chronicle.history import wire
from chronicle.protos.v1 import common_pb2
from chronicle.protos.v1 import service_pb2 as pb
from tests.server.conftest import payload, payload_proto, start_request


async def _take_query(stub, *, queue: str = "q", identity: str = "w"):
    """Poll until a query task comes (dropping real workflow tasks: they time out)."""
    while True:
        task = await stub.PollWorkflowTask(
            pb.PollWorkflowTaskRequest(task_queue=queue, identity=identity), timeout=5
        )
        if task.HasField("query"):
            return task


async def _answer_one(stub, *, fail: bool = False, queue: str = "q", identity: str = "w"):
    while True:  # ignores (drops) real workflow tasks: they time out and come back
        task = await stub.PollWorkflowTask(
            pb.PollWorkflowTaskRequest(task_queue=queue, identity=identity), timeout=5
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


async def _started_and_idle(stub, workflow_id: str, queue: str) -> None:
    """A run whose first workflow task completed (so only queries come to pollers)."""
    await stub.StartWorkflow(start_request(workflow_id, task_queue=queue))
    first = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue=queue, identity="starter"), timeout=5
    )
    await stub.CompleteWorkflowTask(pb.CompleteWorkflowTaskRequest(task_token=first.task_token))


async def test_a_query_taken_by_a_worker_whose_session_breaks_goes_to_the_next_poller(
    stub,
) -> None:
    """The worker that took the query is lost (its session stream ends): the query goes
    back to the queue at once and another worker answers it, long before the 30 s a taken
    query waits for its answer."""
    await _started_and_idle(stub, "q-lost", "ql")
    session = stub.WorkerSession(pb.WorkerSessionRequest(identity="doomed"))
    await session.read()  # established
    query = asyncio.ensure_future(
        stub.QueryWorkflow(
            pb.QueryWorkflowRequest(workflow_id="q-lost", query_name="status"), timeout=60
        )
    )
    taken = await _take_query(stub, queue="ql", identity="doomed")  # and never answered
    rescuer = asyncio.ensure_future(_answer_one(stub, queue="ql", identity="rescuer"))
    session.cancel()  # the doomed worker is gone
    response = await asyncio.wait_for(query, 15)
    assert wire.payload_from_proto(response.result) == payload(["status", 0])
    second = await rescuer
    assert second.query.query_id == taken.query.query_id
    with pytest.raises(grpc.aio.AioRpcError) as info:  # answered already
        await stub.RespondQueryTask(pb.RespondQueryTaskRequest(task_token=taken.task_token))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_query_given_back_still_takes_its_first_worker_late_answer(stub) -> None:
    """Given back after its worker's session broke, with nobody else polling: the worker's
    answer, if it comes after all, is the answer."""
    await _started_and_idle(stub, "q-late", "qla")
    session = stub.WorkerSession(pb.WorkerSessionRequest(identity="slow"))
    await session.read()
    query = asyncio.ensure_future(
        stub.QueryWorkflow(
            pb.QueryWorkflowRequest(workflow_id="q-late", query_name="status"), timeout=60
        )
    )
    taken = await _take_query(stub, queue="qla", identity="slow")
    session.cancel()
    await asyncio.sleep(0.5)  # given back meanwhile
    answer = pb.RespondQueryTaskRequest(task_token=taken.task_token)
    answer.result.CopyFrom(payload_proto("late"))
    await stub.RespondQueryTask(answer)
    response = await asyncio.wait_for(query, 15)
    assert wire.payload_from_proto(response.result) == payload("late")


async def test_a_query_given_back_that_nobody_takes_fails_naming_the_lost_worker(stub) -> None:
    await _started_and_idle(stub, "q-gone", "qg")
    session = stub.WorkerSession(pb.WorkerSessionRequest(identity="gone"))
    await session.read()
    query = asyncio.ensure_future(
        stub.QueryWorkflow(
            pb.QueryWorkflowRequest(workflow_id="q-gone", query_name="status"), timeout=3
        )
    )
    await _take_query(stub, queue="qg", identity="gone")
    session.cancel()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await query
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "handed to workers that were lost (worker 'gone': its session ended" in (
        info.value.details() or ""
    )
    assert "no other worker took it since" in (info.value.details() or "")
