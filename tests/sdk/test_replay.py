"""Replay: recorded histories re-run silently; changed code raises NondeterminismError."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from datetime import timedelta

import pytest

from chronicle.history import commands as cmd
from chronicle.history import events as ev
from chronicle.history.codec import event_to_dict
from chronicle.history.errors import InvalidHistoryError
from chronicle.history.payloads import from_payload
from chronicle.sdk.activity import activity
from chronicle.sdk.errors import NondeterminismError, WorkflowTaskError
from chronicle.sdk.replay import RecordedRun, replay, replay_histories
from chronicle.sdk.testing import replay_json
from chronicle.sdk.workflow import workflow
from tests.sdk.sdk_histories import Sim, result_of


@activity
async def step_a(x: int) -> int:
    return x + 1


@activity
async def step_b(x: int) -> int:
    return x * 10


@workflow(name="pipeline")
async def pipeline_v1(x: int) -> int:
    a = await step_a(x)  # LINE_V1_A
    await workflow.sleep(timedelta(seconds=30))
    values = await asyncio.gather(step_b(a), step_b(a + 1))
    return sum(values) + workflow.random().randint(0, 0)


@workflow(name="pipeline")
async def pipeline_v2(x: int) -> int:
    a = await step_b(x)  # LINE_V2_B
    await workflow.sleep(timedelta(seconds=30))
    values = await asyncio.gather(step_b(a), step_b(a + 1))
    return sum(values)


@workflow(name="pipeline")
async def pipeline_v3(x: int) -> int:
    a = await step_a(x)
    values = await asyncio.gather(step_b(a), step_b(a + 1))  # LINE_V3_GATHER
    return sum(values)


def _line(marker: str) -> int:
    with open(__file__, encoding="utf-8") as source:
        for number, text in enumerate(source, start=1):
            if f"# {marker}" in text and "_line(" not in text:
                return number
    raise LookupError(marker)


def recorded_pipeline() -> Sim:
    sim = Sim(pipeline_v1, 1)
    sim.step()
    sim.activity_completed(1, 2)
    sim.step()
    sim.timer_fired(1)
    sim.step()
    sim.activity_completed(3, 30)
    sim.activity_completed(2, 20)
    assert result_of(sim.step()) == 50
    sim.check()
    return sim


def test_full_replay_of_recorded_history_is_silent() -> None:
    sim = recorded_pipeline()
    replay(sim.events, [pipeline_v1])


def test_replay_of_every_prefix_ending_in_a_task() -> None:
    sim = recorded_pipeline()
    for end, event in enumerate(sim.events, start=1):
        if isinstance(event.attributes, ev.WorkflowTaskStarted):
            replay(sim.events[:end], [pipeline_v1])


def test_changed_activity_raises_nondeterminism_with_both_call_sites() -> None:
    sim = recorded_pipeline()
    with pytest.raises(NondeterminismError) as info:
        replay(sim.events, [pipeline_v2], workflow_id="order-7", run_id="r-7")
    message = str(info.value)
    assert "order-7" in message
    assert "r-7" in message
    scheduled = sim.history.find(ev.ActivityScheduled, seq=1)
    assert f"event {scheduled.id}" in message
    assert f"test_replay.py:{_line('LINE_V1_A')}" in message
    assert f"test_replay.py:{_line('LINE_V2_B')}" in message
    assert "step_a" in message
    assert "step_b" in message
    assert info.value.event_id == scheduled.id
    assert info.value.cause.value == "nondeterminism"


def test_removed_timer_raises_nondeterminism() -> None:
    sim = recorded_pipeline()
    with pytest.raises(NondeterminismError) as info:
        replay(sim.events, [pipeline_v3])
    message = str(info.value)
    assert "TimerStarted" in message
    assert "ScheduleActivity" in message
    assert f"test_replay.py:{_line('LINE_V3_GATHER')}" in message


def test_live_instance_checks_next_feed_against_its_own_commands() -> None:
    sim = Sim(pipeline_v1, 1)
    sim.task()
    # the server recorded something else than what this instance answered
    sim.complete([cmd.StartTimer(seq=1, duration=timedelta(seconds=1))])
    sim.start_task()
    with pytest.raises(NondeterminismError):
        sim.feed()


def test_replay_json_round_trip() -> None:
    sim = recorded_pipeline()
    text = json.dumps([event_to_dict(e) for e in sim.events])
    replay_json(text, [pipeline_v1])


@workflow
async def signal_collector() -> list[str]:
    got: list[str] = []
    workflow.on_signal("item", got.append)
    await workflow.wait_condition(lambda: len(got) >= 2)
    return got


def test_signal_during_task_replays_in_same_activation_as_live() -> None:
    sim = Sim(signal_collector)
    sim.start_task()
    assert sim.feed() == []
    sim.signal("item", "a")
    sim.complete([])
    sim.signal("item", "b")
    assert result_of(sim.step()) == ["a", "b"]
    sim.check()
    replay(sim.events, [signal_collector])


@workflow
async def waits_with_timeout() -> str:
    try:
        await workflow.wait_condition(lambda: False, timeout=timedelta(seconds=5))
    except TimeoutError:
        pass
    try:
        return str(await workflow.wait_signal("go", timeout=timedelta(seconds=5)))
    except TimeoutError:
        return "no signal"


def test_wait_condition_and_wait_signal_timeouts() -> None:
    sim = Sim(waits_with_timeout)
    [timer] = sim.step()
    assert isinstance(timer, cmd.StartTimer)
    sim.timer_fired(1)
    [timer2] = sim.step()
    assert isinstance(timer2, cmd.StartTimer)
    assert timer2.seq == 2
    sim.timer_fired(2)
    assert result_of(sim.step()) == "no signal"
    replay(sim.events, [waits_with_timeout])


@workflow(name="versioned")
async def versioned_old() -> str:
    await workflow.sleep(1)
    return "old"


@workflow(name="versioned")
async def versioned_new() -> str:
    if workflow.patched("faster"):
        return "new"
    await workflow.sleep(1)
    return "old"


def test_patched_is_false_on_old_histories_and_true_on_new_runs() -> None:
    old = Sim(versioned_old)
    old.step()
    old.timer_fired(1)
    old.step()
    replay(old.events, [versioned_new])  # takes the old branch: no nondeterminism
    new = Sim(versioned_new)
    commands = new.step()
    assert isinstance(commands[0], cmd.RecordMarker)
    assert commands[0].marker_name == "patch"
    assert from_payload(commands[0].details["id"]) == "faster"
    assert result_of(commands) == "new"
    replay(new.events, [versioned_new])


@workflow(name="bug_later")
async def fine() -> int:
    await workflow.sleep(1)
    return 1


@workflow(name="bug_later")
async def broken() -> int:
    await workflow.sleep(1)
    raise KeyError("oops")


def test_replay_with_code_that_now_crashes_fails_the_task() -> None:
    sim = Sim(fine)
    sim.step()
    sim.timer_fired(1)
    sim.step()
    with pytest.raises(WorkflowTaskError):
        replay(sim.events, [broken])


def test_replay_unknown_type() -> None:
    sim = recorded_pipeline()
    with pytest.raises(LookupError, match="pipeline"):
        replay(sim.events, [fine])


@workflow
async def continues(n: int) -> None:
    await workflow.sleep(1)
    workflow.continue_as_new(n + 1)


def test_continue_as_new() -> None:
    sim = Sim(continues, 1)
    sim.step()
    sim.timer_fired(1)
    [command] = sim.step()
    assert isinstance(command, cmd.ContinueAsNew)
    assert command.workflow_type == "continues"
    assert [from_payload(p) for p in command.input] == [2]
    replay(sim.events, [continues])


@workflow
async def cancels_then_sleeps() -> str:
    job = asyncio.ensure_future(workflow.execute_activity(step_a, 1))
    await workflow.sleep(1)
    job.cancel()  # no worker started it: the server cancels it at once
    with contextlib.suppress(asyncio.CancelledError):
        await job
    await workflow.sleep(1)  # a command-event after the cancellation, in the same task
    return "done"


def test_a_cancel_resolved_at_once_among_the_command_events_replays() -> None:
    """The server writes ActivityCanceled right after ActivityCancelRequested, among the
    task's command-events, when the activity had not started: the command-events after it
    are still the task's, and the cancellation is the next activation's answer."""
    sim = Sim(cancels_then_sleeps)
    sim.step()  # ScheduleActivity(1), StartTimer(1): seqs count per kind
    sim.timer_fired(1)
    commands = sim.task()
    assert [type(c) for c in commands] == [cmd.RequestCancelActivity, cmd.StartTimer]
    sim.add(
        ev.WorkflowTaskCompleted(
            scheduled_event_id=sim.scheduled_id, started_event_id=sim.started_id
        )
    )
    scheduled = sim.history.find(ev.ActivityScheduled, seq=1)
    sim.add(ev.ActivityCancelRequested(scheduled_event_id=scheduled.id))
    sim.add(ev.ActivityCanceled(scheduled_event_id=scheduled.id))
    sim.add(ev.TimerStarted(seq=2, duration=timedelta(seconds=1)))
    sim.timer_fired(2)
    assert result_of(sim.step()) == "done"
    sim.check()
    replay(sim.events, [cancels_then_sleeps])


@workflow
async def cancels_a_fired_timer() -> str:
    sleeper = asyncio.ensure_future(workflow.sleep(5))
    await step_a(1)
    sleeper.cancel()  # it fired meanwhile: the server records nothing for this cancel
    await step_b(2)
    return "done"


def test_a_cancel_the_server_dropped_because_its_timer_fired_first_replays() -> None:
    sim = Sim(cancels_a_fired_timer)
    sim.step()  # ScheduleActivity(1), StartTimer(1)
    sim.activity_completed(1, 2)
    commands = sim.task()
    assert sorted(type(c).__name__ for c in commands) == ["CancelTimer", "ScheduleActivity"]
    sim.timer_fired(1)  # appended while the task ran, before its completion
    sim.complete([c for c in commands if not isinstance(c, cmd.CancelTimer)])  # dropped
    sim.activity_completed(2, 3)
    assert result_of(sim.step()) == "done"
    replay(sim.events, [cancels_a_fired_timer])


def _renumbered(events: list[ev.Event]) -> list[ev.Event]:
    return [dataclasses.replace(e, id=i) for i, e in enumerate(events, start=1)]


def test_replay_refuses_a_history_without_its_only_workflow_started_before_running_code() -> None:
    events = recorded_pipeline().events
    without = _renumbered(events[1:])
    with pytest.raises(InvalidHistoryError, match=r"^event 1 \(WorkflowTaskScheduled\): "):
        replay(without, [pipeline_v1])
    twice = _renumbered([*events[:3], events[0], *events[3:]])
    with pytest.raises(InvalidHistoryError, match=r"^event 4 \(WorkflowStarted\): "):
        replay(twice, [pipeline_v1])
    with pytest.raises(ValueError, match="empty"):
        replay([], [pipeline_v1])
    [result] = replay_histories([RecordedRun(twice, "order-7", "r-7")], [pipeline_v1])
    assert isinstance(result.error, InvalidHistoryError)
    assert str(result) == (
        f"order-7 (run r-7, pipeline, {len(twice)} events): InvalidHistoryError: "
        "event 4 (WorkflowStarted): WorkflowStarted must be event 1, and only event 1"
    )
