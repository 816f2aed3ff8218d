"""Child workflows, parent-close policies, and signals/cancels to other workflows."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from chronicle.history import commands
from chronicle.history.values import Failure
from chronicle.protos.v1 import service_pb2 as pb
from chronicle.server.engine import timeouts
from tests.server.conftest import (
    attributes,
    command_protos,
    event_types,
    lock_waiters,
    payload,
    start_request,
)


async def _poll(stub, queue: str) -> pb.PollWorkflowTaskResponse:
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue=queue, identity=f"w-{queue}"), timeout=10
    )
    assert task.task_token, f"expected a workflow task on {queue}"
    return task


async def _complete(stub, task, *cmds: commands.Command) -> None:
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token, identity="w", commands=command_protos(*cmds)
        )
    )


async def _history(stub, workflow_id: str, run_id: str = "") -> list[str]:
    response = await stub.GetWorkflowHistory(
        pb.GetWorkflowHistoryRequest(workflow_id=workflow_id, run_id=run_id)
    )
    return event_types(response.events)


async def test_child_runs_and_reports_its_result(stub) -> None:
    parent = await stub.StartWorkflow(start_request("parent-1"))
    await _complete(
        stub,
        await _poll(stub, "q"),
        commands.StartChildWorkflow(
            seq=1, workflow_id="child-1", workflow_type="cwf", task_queue="cq", input=(payload(7),)
        ),
    )
    assert (await _history(stub, "parent-1"))[-3:] == [
        "ChildWorkflowInitiated",
        "ChildWorkflowStarted",
        "WorkflowTaskScheduled",
    ]
    child_task = await _poll(stub, "cq")
    started = attributes(child_task.events[0])
    assert started.parent.workflow_id == "parent-1"
    assert started.parent.run_id == parent.run_id
    assert started.input == (payload(7),)
    await _complete(stub, await _poll(stub, "q"))  # the parent saw ChildWorkflowStarted
    described = await stub.DescribeWorkflow(pb.DescribeWorkflowRequest(workflow_id="parent-1"))
    assert [c.workflow_id for c in described.pending_children] == ["child-1"]

    await _complete(stub, child_task, commands.CompleteWorkflow(result=payload("child done")))
    task = await _poll(stub, "q")
    done = [e for e in task.events if e.event_type == "ChildWorkflowCompleted"]
    assert attributes(done[0]).result == payload("child done")
    await _complete(stub, task, commands.CompleteWorkflow())


async def test_child_failure_and_start_conflict(stub) -> None:
    await stub.StartWorkflow(start_request("busy", task_queue="other"))
    await stub.StartWorkflow(start_request("parent-2"))
    await _complete(
        stub,
        await _poll(stub, "q"),
        commands.StartChildWorkflow(seq=1, workflow_id="busy", workflow_type="cwf"),
        commands.StartChildWorkflow(
            seq=2, workflow_id="child-2", workflow_type="cwf", task_queue="cq"
        ),
    )
    history = await _history(stub, "parent-2")
    assert "ChildWorkflowStartFailed" in history
    child_task = await _poll(stub, "cq")
    await _complete(stub, child_task, commands.FailWorkflow(failure=Failure(message="child broke")))
    while True:
        task = await _poll(stub, "q")
        failed = [e for e in task.events if e.event_type == "ChildWorkflowFailed"]
        if failed:
            break
        await _complete(stub, task)
    failure = attributes(failed[0]).failure
    assert failure.kind == "child_workflow"
    assert failure.cause.message == "child broke"


async def test_parent_close_terminates_children(stub) -> None:
    await stub.StartWorkflow(start_request("parent-3"))
    await _complete(
        stub,
        await _poll(stub, "q"),
        commands.StartChildWorkflow(
            seq=1, workflow_id="child-3", workflow_type="cwf", task_queue="cq"
        ),
        commands.StartChildWorkflow(
            seq=2,
            workflow_id="child-3b",
            workflow_type="cwf",
            task_queue="cq",
            parent_close_policy="abandon",
        ),
    )
    await _complete(stub, await _poll(stub, "q"), commands.CompleteWorkflow())
    result = await stub.GetWorkflowResult(
        pb.GetWorkflowResultRequest(workflow_id="child-3"), timeout=5
    )
    assert result.status == "terminated"
    assert "parent workflow 'parent-3' closed" in result.failure.message
    described = await stub.DescribeWorkflow(pb.DescribeWorkflowRequest(workflow_id="child-3b"))
    assert described.info.status == "running"
    assert described.info.parent_workflow_id == "parent-3"


async def test_signal_and_cancel_other_workflows(stub) -> None:
    await stub.StartWorkflow(start_request("target", task_queue="tq"))
    await stub.StartWorkflow(start_request("source"))
    await _complete(
        stub,
        await _poll(stub, "q"),
        commands.SignalExternalWorkflow(
            seq=1, workflow_id="target", signal_name="hello", input=(payload(1),)
        ),
        commands.SignalExternalWorkflow(seq=2, workflow_id="ghost", signal_name="hello"),
        commands.RequestCancelExternalWorkflow(seq=3, workflow_id="target"),
    )
    history = await stub.GetWorkflowHistory(pb.GetWorkflowHistoryRequest(workflow_id="source"))
    resolved = [
        attributes(e)
        for e in history.events
        if e.event_type in ("ExternalSignalResolved", "ExternalCancelResolved")
    ]
    assert [r.failure is None for r in resolved] == [True, False, True]
    target = await _history(stub, "target")
    assert "SignalReceived" in target
    assert "WorkflowCancelRequested" in target


async def _start_parent_and_child(
    stub, parent_id: str, child_id: str, parent_close_policy: str = "terminate"
) -> None:
    """Start run ``parent_id`` (queue q) and complete its first task with a child
    ``child_id`` (type cwf, queue cq)."""
    await stub.StartWorkflow(start_request(parent_id))
    await _complete(
        stub,
        await _poll(stub, "q"),
        commands.StartChildWorkflow(
            seq=1,
            workflow_id=child_id,
            workflow_type="cwf",
            task_queue="cq",
            parent_close_policy=parent_close_policy,
        ),
    )


async def _behind_a_continue_as_new(
    db,
    workflow_id: str,
    continue_as_new: Callable[[], Awaitable[Any]],
    call: Callable[[], Awaitable[Any]],
) -> None:
    """``call()`` resolves the workflow's run while ``continue_as_new()`` of that run waits on
    its lock, and gets the lock only once the continue-as-new has committed. (Callables: a
    gRPC call starts when it is made.)"""
    held = await _holding_run(db, workflow_id)
    continued = asyncio.ensure_future(continue_as_new())
    await lock_waiters(db, 1)
    racing = asyncio.ensure_future(call())
    await lock_waiters(db, 2)
    await held.rollback()
    await continued
    await racing


async def _holding_run(db, workflow_id: str) -> Any:
    """A transaction (started) holding the lock of the workflow's only run."""
    held = db.transaction()
    await held.start()
    await db.execute("SELECT 1 FROM executions WHERE workflow_id = $1 FOR UPDATE", workflow_id)
    return held


async def test_a_parent_close_policy_follows_a_child_continuing_as_new_meanwhile(stub, db) -> None:
    """The parent closes while its child continues as new: the policy (terminate) must reach
    the child's new run, not stop at the run that just closed."""
    await _start_parent_and_child(stub, "pp-can", "pc-can")
    child_task = await _poll(stub, "cq")
    await _behind_a_continue_as_new(
        db,
        "pc-can",
        lambda: _complete(stub, child_task, commands.ContinueAsNew(input=(payload(1),))),
        lambda: stub.TerminateWorkflow(
            pb.TerminateWorkflowRequest(workflow_id="pp-can", reason="stop")
        ),
    )
    statuses = await db.fetch(
        "SELECT status FROM executions WHERE workflow_id = 'pc-can' ORDER BY start_time"
    )
    assert [r["status"] for r in statuses] == ["continued_as_new", "terminated"]


async def test_a_parent_close_policy_spares_a_later_run_reusing_the_child_id(
    stub, db, monkeypatch
) -> None:
    """The child closed, the parent has not yet learnt it (its report is postponed), and an
    unrelated run now uses the child's workflow id: the parent's close policy must leave it."""
    real_child_closed = timeouts._child_closed
    reports: list[int] = []

    async def postponed_once(conn: Any, parent: Any, initiated: int) -> None:
        reports.append(initiated)
        if len(reports) == 1:
            raise RuntimeError("transient")  # the timer loop tries again in 10 s
        await real_child_closed(conn, parent, initiated)

    monkeypatch.setattr(timeouts, "_child_closed", postponed_once)
    await _start_parent_and_child(stub, "pp-reuse", "pc-reuse")
    await _complete(stub, await _poll(stub, "cq"), commands.CompleteWorkflow())
    for _ in range(200):
        if reports:
            break
        await asyncio.sleep(0.02)
    unrelated = await stub.StartWorkflow(start_request("pc-reuse", task_queue="elsewhere"))
    await stub.TerminateWorkflow(pb.TerminateWorkflowRequest(workflow_id="pp-reuse", reason="x"))
    status = await db.fetchval("SELECT status FROM executions WHERE run_id = $1", unrelated.run_id)
    assert status == "running"


async def test_a_signal_racing_a_continue_as_new_reaches_the_new_run(stub, db) -> None:
    """A signal to the workflow (no run named) resolved its run just before that run
    continued as new: it is delivered to the new run, not refused as NOT_FOUND."""
    await stub.StartWorkflow(start_request("sig-can"))
    task = await _poll(stub, "q")
    await _behind_a_continue_as_new(
        db,
        "sig-can",
        lambda: _complete(stub, task, commands.ContinueAsNew()),
        lambda: stub.SignalWorkflow(
            pb.SignalWorkflowRequest(workflow_id="sig-can", signal_name="s")
        ),
    )
    assert "SignalReceived" in await _history(stub, "sig-can")


async def _eventually_in(stub, workflow_id: str, run_id: str, event_type: str) -> list[str]:
    """The run's event types once ``event_type`` is among them (10 s at most)."""
    for _ in range(200):
        history = await _history(stub, workflow_id, run_id)
        if event_type in history:
            return history
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {event_type} in {workflow_id} ({run_id}): {history}")


async def test_a_reset_to_the_task_that_initiated_a_child_starts_it_again(stub, db) -> None:
    """The reset point's task initiated the child, started only after it: the reset run
    starts the child again (the old child, abandoned, had completed)."""
    await _start_parent_and_child(stub, "rp-1", "rc-1", "abandon")
    await _complete(stub, await _poll(stub, "cq"), commands.CompleteWorkflow(result=payload(1)))
    history = await _history(stub, "rp-1")
    assert history[3:6] == [
        "WorkflowTaskCompleted",
        "ChildWorkflowInitiated",
        "ChildWorkflowStarted",
    ]
    reset = await stub.ResetWorkflow(pb.ResetWorkflowRequest(workflow_id="rp-1", event_id=4))
    assert "ChildWorkflowStarted" in await _history(stub, "rp-1", reset.run_id)
    runs = await db.fetch(
        "SELECT status, parent_run_id FROM executions WHERE workflow_id = 'rc-1' "
        "ORDER BY start_time"
    )
    assert [r["status"] for r in runs] == ["completed", "running"]
    assert runs[1]["parent_run_id"] == reset.run_id


async def test_a_reset_past_a_started_child_keeps_it_and_learns_its_result(stub, db) -> None:
    """The child was started before the reset point: the reset neither closes it (its
    policy is terminate) nor loses its result, which reaches the reset run."""
    await _start_parent_and_child(stub, "rp-2", "rc-2")
    child_task = await _poll(stub, "cq")
    await _complete(
        stub, await _poll(stub, "q"), commands.StartTimer(seq=2, duration=timedelta(hours=1))
    )
    history = await _history(stub, "rp-2")
    point = max(i for i, t in enumerate(history, start=1) if t == "WorkflowTaskCompleted")
    reset = await stub.ResetWorkflow(pb.ResetWorkflowRequest(workflow_id="rp-2", event_id=point))
    child_status = await db.fetchval("SELECT status FROM executions WHERE workflow_id = 'rc-2'")
    assert child_status == "running"
    await _complete(stub, child_task, commands.CompleteWorkflow(result=payload("done")))
    await _eventually_in(stub, "rp-2", reset.run_id, "ChildWorkflowCompleted")


async def test_resetting_a_child_does_not_tell_its_parent_it_was_terminated(stub) -> None:
    """A reset child goes on in its reset run: the parent hears of it only when that run
    closes, with its result."""
    await _start_parent_and_child(stub, "rp-3", "rc-3")
    # The reset run goes on from this task: its timer fires, and the child's code runs again.
    await _complete(
        stub, await _poll(stub, "cq"), commands.StartTimer(seq=1, duration=timedelta(seconds=1))
    )
    await _complete(stub, await _poll(stub, "q"))  # the parent saw ChildWorkflowStarted
    await stub.ResetWorkflow(pb.ResetWorkflowRequest(workflow_id="rc-3", event_id=4))
    await _complete(stub, await _poll(stub, "cq"), commands.CompleteWorkflow(result=payload(7)))
    history = await _eventually_in(stub, "rp-3", "", "ChildWorkflowCompleted")
    assert "ChildWorkflowFailed" not in history
