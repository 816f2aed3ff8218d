"""``first_execution_run_id`` on the requests that address a run (docs/decisions.md §22): with
no run id, the id's current run is addressed only if it is of the chain that run started;
otherwise NOT_FOUND, and nothing changes. Hand-written worker calls over real gRPC."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from chronicle.history import commands
from chronicle.protos.v1 import service_pb2 as pb
from chronicle.server.engine import limits
from tests.server.conftest import command_protos, event_types, lock_waiters, start_request


async def _poll(stub: Any) -> pb.PollWorkflowTaskResponse:
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity="w"), timeout=10
    )
    assert task.task_token, "expected a workflow task"
    return task


async def _complete(stub: Any, *cmds: commands.Command) -> pb.PollWorkflowTaskResponse:
    task = await _poll(stub)
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token, identity="w", commands=command_protos(*cmds)
        )
    )
    return task


async def _history(stub: Any, workflow_id: str, run_id: str) -> list[str]:
    response = await stub.GetWorkflowHistory(
        pb.GetWorkflowHistoryRequest(workflow_id=workflow_id, run_id=run_id)
    )
    return event_types(response.events)


async def _continued(stub: Any, workflow_id: str) -> tuple[str, str]:
    """Start ``workflow_id`` and continue its first run as new: (first run, second run)."""
    first = (await stub.StartWorkflow(start_request(workflow_id))).run_id
    await _complete(stub, commands.ContinueAsNew())
    described = await stub.DescribeWorkflow(pb.DescribeWorkflowRequest(workflow_id=workflow_id))
    assert described.info.run_id != first
    return first, described.info.run_id


def _refusals(workflow_id: str, first: str, run_id: str = "") -> dict[str, Any]:
    """Every request that takes ``first_execution_run_id``, for ``workflow_id``."""
    ids = {"workflow_id": workflow_id, "run_id": run_id, "first_execution_run_id": first}
    return {
        "SignalWorkflow": pb.SignalWorkflowRequest(**ids, signal_name="s", request_id="r-1"),
        "QueryWorkflow": pb.QueryWorkflowRequest(**ids, query_name="q"),
        "UpdateWorkflow": pb.UpdateWorkflowRequest(**ids, update_name="u", update_id="u-1"),
        "RequestCancelWorkflow": pb.RequestCancelWorkflowRequest(**ids, request_id="c-1"),
        "TerminateWorkflow": pb.TerminateWorkflowRequest(**ids, reason="no"),
        "DescribeWorkflow": pb.DescribeWorkflowRequest(**ids),
        "GetWorkflowHistory": pb.GetWorkflowHistoryRequest(**ids),
        "ResetWorkflow": pb.ResetWorkflowRequest(**ids, to_last_good=True),
    }


async def _all_refused(stub: Any, requests: dict[str, Any], code: grpc.StatusCode) -> list[str]:
    messages = []
    for method, request in requests.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(stub, method)(request, timeout=10)
        assert caught.value.code() == code, (method, caught.value.details())
        messages.append(caught.value.details() or "")
    return messages


async def test_calls_without_a_run_id_reach_the_chains_current_run(stub) -> None:
    first, second = await _continued(stub, "ch-follow")
    chain = {"workflow_id": "ch-follow", "first_execution_run_id": first}
    described = await stub.DescribeWorkflow(pb.DescribeWorkflowRequest(**chain))
    assert (described.info.run_id, described.info.first_run_id) == (second, first)
    page = await stub.GetWorkflowHistory(pb.GetWorkflowHistoryRequest(**chain))
    assert page.run_id == second
    await stub.SignalWorkflow(pb.SignalWorkflowRequest(**chain, signal_name="s", request_id="x"))
    await stub.RequestCancelWorkflow(pb.RequestCancelWorkflowRequest(**chain, request_id="c"))
    history = await _history(stub, "ch-follow", second)
    assert "SignalReceived" in history
    assert "WorkflowCancelRequested" in history
    assert "SignalReceived" not in await _history(stub, "ch-follow", first)
    # the named run must be of the chain too: the second run is
    pinned = await stub.DescribeWorkflow(pb.DescribeWorkflowRequest(**chain, run_id=second))
    assert pinned.info.run_id == second
    await stub.TerminateWorkflow(pb.TerminateWorkflowRequest(**chain, reason="done"))
    assert (await _history(stub, "ch-follow", second))[-1] == "WorkflowTerminated"


async def test_a_reset_run_stays_in_its_chain(stub) -> None:
    first, second = await _continued(stub, "ch-reset")
    done = await _complete(stub)  # the second run's first task: a reset point
    assert done.workflow_execution.run_id == second
    history = await _history(stub, "ch-reset", second)
    point = history.index("WorkflowTaskCompleted") + 1
    chain = {"workflow_id": "ch-reset", "first_execution_run_id": first}
    reset = await stub.ResetWorkflow(pb.ResetWorkflowRequest(**chain, event_id=point))
    described = await stub.DescribeWorkflow(pb.DescribeWorkflowRequest(**chain))
    assert (described.info.run_id, described.info.first_run_id) == (reset.run_id, first)
    await stub.SignalWorkflow(pb.SignalWorkflowRequest(**chain, signal_name="s", request_id="y"))
    assert "SignalReceived" in await _history(stub, "ch-reset", reset.run_id)


async def test_an_ended_chain_is_not_found_and_a_later_workflow_is_left_alone(stub) -> None:
    first, second = await _continued(stub, "ch-ended")
    await _complete(stub, commands.CompleteWorkflow())
    [ended] = await _all_refused(
        stub,
        {"SignalWorkflow": _refusals("ch-ended", first)["SignalWorkflow"]},
        grpc.StatusCode.NOT_FOUND,
    )
    assert "'ch-ended'" in ended
    assert f"chain of runs started by run '{first}' has ended" in ended
    assert f"its last run {second} is already closed (completed)" in ended
    chain = {"workflow_id": "ch-ended", "first_execution_run_id": first}
    last = await stub.DescribeWorkflow(pb.DescribeWorkflowRequest(**chain))
    assert (last.info.run_id, last.info.status) == (second, "completed")  # still described

    later = (await stub.StartWorkflow(start_request("ch-ended"))).run_id
    before = await _history(stub, "ch-ended", later)
    messages = await _all_refused(stub, _refusals("ch-ended", first), grpc.StatusCode.NOT_FOUND)
    for message in messages:
        assert "'ch-ended'" in message
        assert f"chain of runs started by run '{first}' has ended" in message
        assert f"its current run {later} started a chain of its own" in message
    named = await _all_refused(
        stub, _refusals("ch-ended", first, run_id=later), grpc.StatusCode.NOT_FOUND
    )
    assert all(f"not found in the chain of runs started by run '{first}'" in m for m in named)
    assert await _history(stub, "ch-ended", later) == before
    described = await stub.DescribeWorkflow(pb.DescribeWorkflowRequest(workflow_id="ch-ended"))
    assert (described.info.run_id, described.info.status) == (later, "running")


@pytest.mark.parametrize(
    ("first", "code", "says"),
    [
        ("not-a-run-id", grpc.StatusCode.NOT_FOUND, "started by run 'not-a-run-id' has ended"),
        ("not-a-run-id", grpc.StatusCode.NOT_FOUND, "not found for first_execution_run_id"),
        ("nul\x00run", grpc.StatusCode.NOT_FOUND, "not found for first_execution_run_id"),
        (
            "r" * (limits.MAX_ID_BYTES + 1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "first_execution_run_id is 1001 bytes long",
        ),
    ],
)
async def test_a_bad_first_execution_run_id_is_refused_and_changes_nothing(
    stub, first: str, code: grpc.StatusCode, says: str
) -> None:
    run_id = (await stub.StartWorkflow(start_request("ch-bad"))).run_id
    before = await _history(stub, "ch-bad", run_id)
    for message in await _all_refused(stub, _refusals("ch-bad", first), code):
        assert says in message
    assert await _history(stub, "ch-bad", run_id) == before


async def test_start_answers_the_first_run_of_the_returned_runs_chain(stub) -> None:
    started = await stub.StartWorkflow(start_request("ch-start", request_id="req-1"))
    assert started.first_execution_run_id == started.run_id
    await _complete(stub, commands.ContinueAsNew())
    existing = await stub.StartWorkflow(
        start_request("ch-start", id_conflict_policy="use_existing")
    )
    assert not existing.started
    assert existing.run_id != started.run_id
    assert existing.first_execution_run_id == started.run_id


def _signal_with_start(workflow_id: str, first: str) -> Any:
    return start_request(
        workflow_id, id_conflict_policy="use_existing", signal_name="s", request_id="once"
    )


def _signal(workflow_id: str, first: str) -> Any:
    return pb.SignalWorkflowRequest(workflow_id=workflow_id, signal_name="s", request_id="once")


def _chain_signal(workflow_id: str, first: str) -> Any:
    return pb.SignalWorkflowRequest(
        workflow_id=workflow_id, first_execution_run_id=first, signal_name="s", request_id="once"
    )


@pytest.mark.parametrize(
    ("method", "make"),
    [
        ("SignalWorkflow", _chain_signal),  # a start handle's signal
        ("SignalWorkflow", _signal),  # get_handle(id)'s
        ("StartWorkflow", _signal_with_start),
    ],
    ids=["start-handle", "current-run", "signal-with-start"],
)
async def test_a_signal_retried_after_a_continue_as_new_is_recorded_once(
    stub, method: str, make: Any
) -> None:
    """The retry of a signal recorded just before its run continued as new (the answer was
    lost: the SDK sends the same request again) reaches the chain's next run, which must not
    record it a second time: request ids are unique per chain, not per run."""
    first = (await stub.StartWorkflow(start_request(f"ch-dup-{method}"))).run_id
    request = make(f"ch-dup-{method}", first)
    await getattr(stub, method)(request)
    await _complete(stub, commands.ContinueAsNew())
    described = await stub.DescribeWorkflow(
        pb.DescribeWorkflowRequest(workflow_id=f"ch-dup-{method}")
    )
    second = described.info.run_id
    assert second != first
    await getattr(stub, method)(request)  # the retry
    assert (await _history(stub, f"ch-dup-{method}", first)).count("SignalReceived") == 1
    assert "SignalReceived" not in await _history(stub, f"ch-dup-{method}", second)


@pytest.mark.parametrize("chain", [True, False], ids=["start-handle", "current-run"])
async def test_a_cancel_retried_after_a_continue_as_new_is_applied_once(stub, chain: bool) -> None:
    """The workflow answered the cancel by continuing as new before the retry of the cancel
    (whose first answer was lost) arrived: the retry must not ask the new run to cancel."""
    workflow_id = f"ch-cancel-dup-{chain}"
    first = (await stub.StartWorkflow(start_request(workflow_id))).run_id
    request = pb.RequestCancelWorkflowRequest(
        workflow_id=workflow_id,
        first_execution_run_id=first if chain else "",
        request_id="once",
    )
    await stub.RequestCancelWorkflow(request)
    await _complete(stub, commands.ContinueAsNew())
    described = await stub.DescribeWorkflow(pb.DescribeWorkflowRequest(workflow_id=workflow_id))
    second = described.info.run_id
    assert second != first
    await stub.RequestCancelWorkflow(request)  # the retry
    assert "WorkflowCancelRequested" in await _history(stub, workflow_id, first)
    assert "WorkflowCancelRequested" not in await _history(stub, workflow_id, second)
    await stub.RequestCancelWorkflow(  # a new request is applied
        pb.RequestCancelWorkflowRequest(workflow_id=workflow_id, request_id="another")
    )
    assert "WorkflowCancelRequested" in await _history(stub, workflow_id, second)


@pytest.mark.parametrize(
    ("method", "says"),
    [
        ("SignalWorkflow", "its last run {first} is already closed (terminated)"),
        ("RequestCancelWorkflow", "its last run {first} is already closed (terminated)"),
        ("TerminateWorkflow", "its last run {first} is already closed (terminated)"),
        ("ResetWorkflow", "its current run {later} started a chain of its own"),
    ],
)
async def test_a_chain_ending_while_a_call_waits_for_its_run_leaves_the_new_chain_alone(
    stub, db, method: str, says: str
) -> None:
    """The call checks the chain's open run, then waits for that run's lock behind a start
    with ``terminate_existing`` that closes it and starts a new chain: once it has the lock it
    finds the chain ended (a reset, which locks the id's current run, reruns and finds the new
    chain's run there), and the new chain's run is left as the start made it."""
    first = (await stub.StartWorkflow(start_request("ch-race"))).run_id
    held = db.transaction()
    await held.start()
    await db.execute("SELECT 1 FROM executions WHERE workflow_id = 'ch-race' FOR UPDATE")
    replacing = asyncio.ensure_future(
        stub.StartWorkflow(start_request("ch-race", id_conflict_policy="terminate_existing"))
    )
    await lock_waiters(db, 1)
    call = asyncio.ensure_future(getattr(stub, method)(_refusals("ch-race", first)[method]))
    await lock_waiters(db, 2)
    await held.rollback()
    later = (await replacing).run_id
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    details = caught.value.details() or ""
    assert f"the chain of runs started by run '{first}' has ended" in details
    assert says.format(first=first, later=later) in details
    assert await _history(stub, "ch-race", later) == ["WorkflowStarted", "WorkflowTaskScheduled"]
    described = await stub.DescribeWorkflow(pb.DescribeWorkflowRequest(workflow_id="ch-race"))
    assert (described.info.run_id, described.info.status) == (later, "running")
    assert "SignalReceived" not in await _history(stub, "ch-race", first)
