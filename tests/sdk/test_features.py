"""Children, signal handlers, cancellation types, task retries, the replay-aware logger."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from chronicle.history import commands as cmd
from chronicle.history import events as ev
from chronicle.history.payloads import from_payload, to_payload
from chronicle.history.values import Failure, FailureKind, TimeoutType
from chronicle.sdk.activity import activity
from chronicle.sdk.errors import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    TimeoutFailure,
    WorkflowTaskError,
)
from chronicle.sdk.replay import replay
from chronicle.sdk.workflow import workflow
from tests.sdk.sdk_histories import Sim, result_of


@activity
async def work(x: int) -> int:
    return x


@workflow
async def child(x: int) -> int:
    return x * 2


@workflow
async def parent() -> list[object]:
    out: list[object] = [await workflow.execute_child(child, 21, task_queue="kids")]
    try:
        await workflow.execute_child("child", 0, id="fixed-id")
    except ChildWorkflowError as err:
        out.append((err.workflow_id, type(err.cause).__name__, str(err.cause)))
    return out


def test_child_workflows() -> None:
    sim = Sim(parent)
    [start] = sim.step()
    assert isinstance(start, cmd.StartChildWorkflow)
    assert (start.workflow_id, start.workflow_type, start.task_queue) == (
        "wf-1-child-1",
        "child",
        "kids",
    )
    initiated = sim.history.find(ev.ChildWorkflowInitiated, seq=1)
    sim.add(ev.ChildWorkflowStarted(initiated_event_id=initiated.id, run_id="c-run"))
    sim.add(ev.ChildWorkflowCompleted(initiated_event_id=initiated.id, result=to_payload(42)))
    [second] = sim.step()
    assert isinstance(second, cmd.StartChildWorkflow)
    assert second.workflow_id == "fixed-id"
    initiated = sim.history.find(ev.ChildWorkflowInitiated, seq=2)
    sim.add(
        ev.ChildWorkflowFailed(
            initiated_event_id=initiated.id, failure=Failure(message="nope", type="ValueError")
        )
    )
    assert result_of(sim.step()) == [42, ["fixed-id", "ApplicationError", "nope"]]
    sim.check()
    replay(sim.events, [parent])


@workflow
async def handler_fails() -> None:
    def on_bad(reason: str) -> None:
        raise ApplicationError(f"rejected: {reason}")

    workflow.on_signal("bad", on_bad)
    await workflow.wait_condition(lambda: False)


def test_failure_in_signal_handler_fails_the_workflow() -> None:
    sim = Sim(handler_fails)
    assert sim.step() == []
    sim.signal("bad", "because")
    [fail] = sim.step()
    assert isinstance(fail, cmd.FailWorkflow)
    assert fail.failure.message == "rejected: because"


@workflow
async def handler_bug() -> None:
    workflow.on_signal("bad", lambda: {}["x"])
    await workflow.wait_condition(lambda: False)


def test_bug_in_signal_handler_fails_the_task() -> None:
    sim = Sim(handler_bug)
    sim.step()
    sim.signal("bad")
    with pytest.raises(WorkflowTaskError, match="KeyError"):
        sim.task()


@workflow
async def waits_for_cancellation() -> str:
    act = work.with_options(cancellation_type="wait_cancellation_completed")
    try:
        await act(1)
    except asyncio.CancelledError:
        return "cancelled after ack"
    return "finished"


def test_wait_cancellation_completed_waits_for_the_activity() -> None:
    sim = Sim(waits_for_cancellation)
    sim.step()
    sim.add(ev.WorkflowCancelRequested())
    assert sim.step() == [cmd.RequestCancelActivity(seq=1)]
    scheduled = sim.history.find(ev.ActivityScheduled, seq=1)
    sim.add(ev.ActivityCanceled(scheduled_event_id=scheduled.id))
    assert result_of(sim.step()) == "cancelled after ack"
    replay(sim.events, [waits_for_cancellation])


@workflow
async def abandons() -> str:
    try:
        await work.with_options(cancellation_type="abandon")(1)
    except asyncio.CancelledError:
        return "abandoned"
    return "finished"


def test_abandon_sends_no_cancel() -> None:
    sim = Sim(abandons)
    sim.step()
    sim.add(ev.WorkflowCancelRequested())
    assert result_of(sim.step()) == "abandoned"


@workflow
async def logs() -> None:
    workflow.logger.info("first task")
    await workflow.sleep(1)
    workflow.logger.info("second task")


def test_logger_is_silent_on_replay(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chronicle.workflow")
    sim = Sim(logs)
    sim.step()
    sim.timer_fired(1)
    sim.step()
    assert [r.getMessage() for r in caplog.records] == ["first task", "second task"]
    assert caplog.records[0].workflow_id == "wf-1"  # type: ignore[attr-defined]
    caplog.clear()
    replay(sim.events, [logs])
    assert caplog.records == []


def test_failed_and_timed_out_tasks_carry_their_jobs_over() -> None:
    sim = Sim(work_once)
    sim.start_task()
    sim.add(
        ev.WorkflowTaskTimedOut(
            scheduled_event_id=sim.scheduled_id, started_event_id=sim.started_id
        )
    )
    sim.start_task()
    sim.add(
        ev.WorkflowTaskFailed(scheduled_event_id=sim.scheduled_id, started_event_id=sim.started_id)
    )
    [schedule] = sim.task()  # a fresh worker: one activation with WorkflowStarted
    assert isinstance(schedule, cmd.ScheduleActivity)
    sim.complete([schedule])
    sim.activity_completed(1, 5)
    assert result_of(sim.step()) == 5
    sim.check()
    replay(sim.events, [work_once])


@workflow
async def work_once() -> int:
    return await work(5)


@workflow
async def many_signals() -> list[int]:
    got = [await workflow.wait_signal("n") for _ in range(3)]
    workflow.on_signal("late", lambda *values: got.append(sum(values)))
    await workflow.wait_condition(lambda: len(got) == 4)
    return got


def test_buffered_signals_in_order_and_multi_arg_handlers() -> None:
    sim = Sim(many_signals)
    sim.signal("n", 1)
    sim.signal("late", 10, 20)
    sim.signal("n", 2)
    assert sim.step() == []
    sim.signal("n", 3)
    assert result_of(sim.step()) == [1, 2, 3, 30]
    replay(sim.events, [many_signals])


def test_fail_workflow_failure_kind() -> None:
    @workflow
    async def fails_from_child_error() -> None:
        raise ChildWorkflowError("x", cause=ApplicationError("inner"))

    [fail] = Sim(fails_from_child_error).step()
    assert isinstance(fail, cmd.FailWorkflow)
    assert fail.failure.kind is FailureKind.CHILD_WORKFLOW
    assert fail.failure.cause is not None
    assert fail.failure.cause.message == "inner"
    assert from_payload(fail.failure.details[0]) == ""


def test_query_rejects_commands_and_unknown_names() -> None:
    @workflow
    async def queried() -> None:
        workflow.on_query("sneaky", lambda: asyncio.get_running_loop().call_later(5, print))
        await workflow.wait_condition(lambda: False, timeout=timedelta(days=1))

    sim = Sim(queried)
    sim.step()
    with pytest.raises(ApplicationError, match="read-only"):
        sim.instance.query("sneaky", [])
    with pytest.raises(ApplicationError, match="unknown query 'nope'"):
        sim.instance.query("nope", [])


def test_query_leaves_no_trace_on_seqs_or_random() -> None:
    @workflow(name="q2")
    async def queried() -> float:
        workflow.on_query("draw", lambda: workflow.random().random())
        workflow.on_query("sneaky", lambda: asyncio.get_running_loop().call_later(5, print))
        await workflow.sleep(1)
        return workflow.random().random()

    sim = Sim(queried)
    sim.step()
    sim.instance.query("draw", [])
    with pytest.raises(ApplicationError):
        sim.instance.query("sneaky", [])
    sim.timer_fired(1)
    live = result_of(sim.step())
    replay(sim.events, [queried])
    fresh = Sim(queried)
    fresh.step()
    fresh.timer_fired(1)
    assert result_of(fresh.step()) == live


@workflow
async def times_out() -> list[object]:
    try:
        await work(1)
    except ActivityError as err:
        cause = err.cause
        assert isinstance(cause, TimeoutFailure)
        return [str(err), cause.timeout_type]
    return []


def test_activity_timeout_reaches_workflow_with_timeout_cause() -> None:
    sim = Sim(times_out)
    sim.step()
    scheduled = sim.history.find(ev.ActivityScheduled, seq=1)
    sim.add(
        ev.ActivityTimedOut(
            scheduled_event_id=scheduled.id,
            failure=Failure(message="activity timed out"),
            timeout_type=TimeoutType.HEARTBEAT,
        )
    )
    message, timeout_type = result_of(sim.step())
    assert timeout_type == "heartbeat"
    assert "timed out (heartbeat)" in message


def test_wrong_arguments_fail_the_task() -> None:
    sim = Sim(work_once, "unexpected")
    with pytest.raises(WorkflowTaskError, match="positional argument"):
        sim.task()
