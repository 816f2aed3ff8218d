"""WorkflowInstance driven by hand-built histories: commands, resolutions, outcomes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import pytest

from chronicle.history import commands as cmd
from chronicle.history import events as ev
from chronicle.history.events import WorkflowTaskFailedCause
from chronicle.history.payloads import from_payload
from chronicle.history.values import Failure, FailureKind
from chronicle.sdk.activity import activity
from chronicle.sdk.errors import (
    ActivityError,
    ApplicationError,
    StaleInstanceError,
    WorkflowTaskError,
)
from chronicle.sdk.workflow import workflow
from tests.sdk.sdk_histories import Sim, result_of


@dataclass
class Receipt:
    order_id: str
    cents: int


@activity(start_to_close_timeout=timedelta(seconds=30))
async def charge(order_id: str, cents: int) -> Receipt:
    return Receipt(order_id, cents)


@activity
async def ship(receipt: Receipt) -> str:
    return f"shipped {receipt.order_id}"


@workflow
async def order(order_id: str, cents: int) -> str:
    receipt = await charge(order_id, cents)
    assert isinstance(receipt, Receipt)  # rebuilt from the return hint
    await workflow.sleep(timedelta(minutes=5))
    return await ship(receipt)


def test_activity_timer_activity_then_complete() -> None:
    sim = Sim(order, "o-1", 1299)
    [first] = sim.step()
    assert isinstance(first, cmd.ScheduleActivity)
    assert (first.seq, first.activity_id, first.activity_type) == (1, "1", "charge")
    assert first.start_to_close_timeout == timedelta(seconds=30)
    assert first.call_site is not None
    assert first.call_site.file.endswith("test_instance.py")
    assert [from_payload(p) for p in first.input] == ["o-1", 1299]

    sim.activity_completed(1, Receipt("o-1", 1299))
    [timer] = sim.step()
    assert timer == cmd.StartTimer(seq=1, duration=timedelta(minutes=5), call_site=timer.call_site)
    assert timer.call_site is not None
    assert timer.call_site.function == "order"

    sim.timer_fired(1)
    [second] = sim.step()
    assert isinstance(second, cmd.ScheduleActivity)
    assert second.activity_type == "ship"
    assert [from_payload(p) for p in second.input] == [{"order_id": "o-1", "cents": 1299}]

    sim.activity_completed(2, "shipped o-1")
    commands = sim.step()
    assert result_of(commands) == "shipped o-1"
    sim.check()
    assert sim.instance.is_closed
    assert sim.instance.last_event_id == len(sim.events) - 2  # WTC + WorkflowCompleted not fed


@workflow
async def fan_out(n: int) -> list[int]:
    return list(await asyncio.gather(*(double(i) for i in range(n))))


@activity
async def double(x: int) -> int:
    return 2 * x


def test_gather_schedules_all_in_one_activation_and_resolves_in_any_order() -> None:
    sim = Sim(fan_out, 3)
    commands = sim.step()
    assert [
        (c.seq, from_payload(c.input[0]))
        for c in commands  # type: ignore[union-attr]
    ] == [(1, 0), (2, 1), (3, 2)]
    sim.activity_completed(3, 4)
    assert sim.step() == []
    sim.activity_completed(1, 0)
    sim.activity_completed(2, 2)
    assert result_of(sim.step()) == [0, 2, 4]
    sim.check()


@workflow
async def with_deadline() -> str:
    try:
        return await asyncio.wait_for(charge("o-1", 1), timeout=60)
    except TimeoutError:
        return "timed out"


def test_wait_for_timeout_fires_durable_timer_and_cancels_activity() -> None:
    sim = Sim(with_deadline)
    commands = sim.step()
    assert [type(c) for c in commands] == [cmd.ScheduleActivity, cmd.StartTimer]
    assert commands[1].duration == timedelta(seconds=60)  # type: ignore[union-attr]
    sim.timer_fired(1)
    commands = sim.step()
    assert commands[0] == cmd.RequestCancelActivity(seq=1)
    assert result_of(commands) == "timed out"
    sim.check()


def test_wait_for_result_first_cancels_the_timer() -> None:
    sim = Sim(with_deadline)
    sim.step()
    sim.activity_completed(1, {"order_id": "o-1", "cents": 1})
    commands = sim.step()
    assert commands[0] == cmd.CancelTimer(seq=1)
    assert result_of(commands) == {"order_id": "o-1", "cents": 1}
    sim.check()


@workflow
async def with_timeout_block() -> str:
    try:
        async with asyncio.timeout(10):
            await asyncio.sleep(3600)
    except TimeoutError:
        return "timed out"
    return "slept"


def test_asyncio_timeout_and_sleep_are_durable_timers() -> None:
    sim = Sim(with_timeout_block)
    commands = sim.step()
    assert [(type(c), c.duration) for c in commands] == [  # type: ignore[union-attr]
        (cmd.StartTimer, timedelta(seconds=10)),
        (cmd.StartTimer, timedelta(seconds=3600)),
    ]
    sim.timer_fired(1)
    commands = sim.step()
    assert commands[0] == cmd.CancelTimer(seq=2)
    assert result_of(commands) == "timed out"
    sim.check()


@workflow
async def buggy() -> None:
    {}["missing"]


def test_bug_fails_the_task_not_the_workflow() -> None:
    sim = Sim(buggy)
    with pytest.raises(WorkflowTaskError) as info:
        sim.task()
    assert info.value.cause is WorkflowTaskFailedCause.WORKFLOW_ERROR
    assert info.value.failure.type == "KeyError"
    assert "missing" in info.value.failure.message
    with pytest.raises(StaleInstanceError):
        sim.feed()
    sim.instance.close()


@workflow
async def refuses() -> None:
    raise ApplicationError("card declined", {"code": 51}, type="CardDeclined", non_retryable=True)


def test_application_error_fails_the_workflow() -> None:
    sim = Sim(refuses)
    [fail] = sim.step()
    assert isinstance(fail, cmd.FailWorkflow)
    assert fail.failure.type == "CardDeclined"
    assert fail.failure.message == "card declined"
    assert fail.failure.non_retryable
    assert [from_payload(p) for p in fail.failure.details] == [{"code": 51}]
    assert "refuses" in fail.failure.stack
    sim.check()


@workflow
async def reports_activity_failure() -> str:
    try:
        await charge("o-1", 5)
    except ActivityError as err:
        cause = err.cause
        if not isinstance(cause, ApplicationError):
            return f"unexpected cause {cause!r}"
        return f"{err.activity_type}/{cause.type}/{cause.message}"
    return "no error"


def test_activity_failure_reaches_workflow_as_activity_error() -> None:
    sim = Sim(reports_activity_failure)
    sim.step()
    sim.activity_failed(
        1, Failure(message="insufficient funds", type="PaymentError", kind=FailureKind.APPLICATION)
    )
    assert result_of(sim.step()) == "charge/PaymentError/insufficient funds"
    sim.check()


@workflow
async def lets_activity_failure_escape() -> None:
    await charge("o-1", 5)


def test_uncaught_activity_error_fails_workflow_with_cause_chain() -> None:
    sim = Sim(lets_activity_failure_escape)
    sim.step()
    sim.activity_failed(1, Failure(message="boom", type="ValueError"))
    [fail] = sim.step()
    assert isinstance(fail, cmd.FailWorkflow)
    assert fail.failure.kind is FailureKind.ACTIVITY
    assert fail.failure.cause is not None
    assert fail.failure.cause.type == "ValueError"
    sim.check()


@workflow
async def deterministic_values() -> list[str]:
    values = [str(workflow.now()), str(workflow.random().random()), str(workflow.uuid4())]
    await workflow.sleep(1)
    values += [str(workflow.now()), str(workflow.uuid4()), workflow.info().workflow_id]
    return values


def test_now_random_uuid_come_from_history() -> None:
    sim = Sim(deterministic_values, seed=7)
    sim.step()
    sim.timer_fired(1)
    values = result_of(sim.step())
    started = [e for e in sim.events if isinstance(e.attributes, ev.WorkflowTaskStarted)]
    assert values[0] == str(started[0].time)
    assert values[3] == str(started[1].time)
    assert values[5] == "wf-1"
    again = Sim(deterministic_values, seed=7)
    again.step()
    again.timer_fired(1)
    assert result_of(again.step()) == values
    other_seed = Sim(deterministic_values, seed=8)
    other_seed.step()
    other_seed.timer_fired(1)
    assert result_of(other_seed.step())[1] != values[1]


@workflow
async def signalled() -> list[object]:
    seen: list[object] = []
    workflow.on_query("seen", lambda: list(seen))
    seen.append(await workflow.wait_signal("add"))
    await charge("o", 1)
    seen.append(await workflow.wait_signal("add"))
    return seen


def test_signal_between_started_and_completed_goes_to_next_activation() -> None:
    sim = Sim(signalled)
    sim.start_task()
    assert sim.feed() == []
    sim.signal("add", "early")  # arrives while the first task is being worked on
    sim.complete([])
    commands = sim.task()
    assert [type(c) for c in commands] == [cmd.ScheduleActivity]
    assert from_payload(sim.instance.query("seen", [])) == ["early"]
    sim.signal("add", "late")  # again between started and completed
    sim.complete(commands)
    sim.activity_completed(1, {"order_id": "o", "cents": 1})
    assert result_of(sim.step()) == ["early", "late"]
    sim.check()


def test_task_answer_failed_makes_instance_stale() -> None:
    sim = Sim(order, "o-1", 1)
    sim.task()
    sim.add(
        ev.WorkflowTaskFailed(scheduled_event_id=sim.scheduled_id, started_event_id=sim.started_id)
    )
    sim.start_task()
    with pytest.raises(StaleInstanceError):
        sim.feed()


@workflow
async def cancellable() -> str:
    try:
        await charge("o", 1)
    except asyncio.CancelledError:
        return await ship(Receipt("o", 0))  # compensate
    return "done"


def test_cancel_request_reaches_the_current_await() -> None:
    sim = Sim(cancellable)
    sim.step()
    sim.add(ev.WorkflowCancelRequested(reason="user"))
    commands = sim.step()
    assert commands[0] == cmd.RequestCancelActivity(seq=1)
    assert isinstance(commands[1], cmd.ScheduleActivity)
    assert commands[1].activity_type == "ship"
    sim.activity_completed(2, "compensated")
    assert result_of(sim.step()) == "compensated"
    sim.check()


@workflow
async def ignores_nothing() -> None:
    await charge("o", 1)


def test_cancel_request_uncaught_cancels_the_workflow() -> None:
    sim = Sim(ignores_nothing)
    sim.step()
    sim.add(ev.WorkflowCancelRequested())
    assert sim.step() == [cmd.RequestCancelActivity(seq=1), cmd.CancelWorkflow()]
    sim.check()


def test_close_cancels_pending_tasks() -> None:
    sim = Sim(order, "o", 1)
    sim.task()
    sim.instance.close()
    assert not sim.instance._loop.tasks
