"""Replay checks a local activity's type: a marker recorded for one activity type never
resolves a call of another; the divergence is the same ``NondeterminismError`` as for a swapped
regular activity, naming both types and both call sites."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest

from chronicle.history import commands as cmd
from chronicle.history import events as ev
from chronicle.history.payloads import from_payloads, to_payload
from chronicle.sdk._local import LocalActivityRequest, LocalOutcome
from chronicle.sdk.activity import activity
from chronicle.sdk.errors import NondeterminismError
from chronicle.sdk.replay import replay
from chronicle.sdk.workflow import workflow
from tests.sdk.sdk_histories import Sim, result_of


@activity
async def charge_card(order: str) -> str:
    return "receipt-" + order


@activity
async def authorize_card(order: str) -> str:
    return "auth-" + order


@activity
async def notify(order: str) -> None:
    return None


@workflow(name="billing")
async def billing_v1(order: str) -> str:
    receipt = await workflow.execute_local_activity(charge_card, order)  # V1_LOCAL
    await workflow.sleep(timedelta(seconds=5))
    return receipt


@workflow(name="billing")
async def billing_swapped(order: str) -> str:
    receipt = await workflow.execute_local_activity(authorize_card, order)  # SWAPPED_LOCAL
    await workflow.sleep(timedelta(seconds=5))
    return receipt


@workflow(name="billing")
async def billing_notifies_first(order: str) -> str:
    sent = asyncio.ensure_future(notify(order))  # NOTIFY_FIRST
    receipt = await workflow.execute_local_activity(authorize_card, order)
    await sent
    return receipt


@workflow(name="twice")
async def twice_v1(order: str) -> str:
    first = await workflow.execute_local_activity(charge_card, order)
    second = await workflow.execute_local_activity(charge_card, order + "-2")
    return first + "/" + second


@workflow(name="twice")
async def twice_swapped(order: str) -> str:
    first = await workflow.execute_local_activity(charge_card, order)
    second = await workflow.execute_local_activity(authorize_card, order + "-2")
    return first + "/" + second


def _line(marker: str) -> int:
    with open(__file__, encoding="utf-8") as source:
        for number, text in enumerate(source, start=1):
            if f"# {marker}" in text and "_line(" not in text:
                return number
    raise LookupError(marker)


def _run_locals(sim: Sim, commands: list[cmd.Command]) -> list[cmd.Command]:
    """Play the worker: run the local activities the live activation waits for (their result
    is the activity's own), until the activation is complete."""
    while due := sim.instance.local_activities_due:
        outcomes = {request.seq: _outcome(request) for request in due}
        commands = sim.instance.resume_local_activities(outcomes)
    return commands


def _outcome(request: LocalActivityRequest) -> LocalOutcome:
    [order] = from_payloads(request.input, [str])
    prefix = {"charge_card": "receipt-", "authorize_card": "auth-"}[request.activity_type]
    return LocalOutcome(result=to_payload(prefix + order))


def recorded_billing() -> Sim:
    sim = Sim(billing_v1, "o-7")
    sim.start_task()
    commands = _run_locals(sim, sim.feed())
    assert [type(c) for c in commands] == [cmd.RecordMarker, cmd.StartTimer]
    sim.complete(commands)
    sim.timer_fired(1)
    assert result_of(sim.step()) == "receipt-o-7"
    sim.check()
    return sim


def test_the_recorded_code_replays_and_its_marker_names_type_and_call_site() -> None:
    sim = recorded_billing()
    marker = sim.history.find(ev.MarkerRecorded, seq=1).attributes
    assert marker.details["activity_type"] == to_payload("charge_card")
    assert marker.call_site is not None
    assert marker.call_site.line == _line("V1_LOCAL")
    replay(sim.events, [billing_v1])


def test_a_swapped_local_activity_is_a_nondeterminism_naming_both_types() -> None:
    sim = recorded_billing()
    marker = sim.history.find(ev.MarkerRecorded, seq=1)
    with pytest.raises(NondeterminismError) as info:
        replay(sim.events, [billing_swapped], workflow_id="bill-7", run_id="r-7")
    message = str(info.value)
    assert "workflow 'bill-7' (run r-7, type billing)" in message
    assert (
        "MarkerRecorded(activity_type='charge_card', marker_name='local_activity', seq=1) "
        f"as event {marker.id} at tests/sdk/test_local_activity_replay.py:{_line('V1_LOCAL')}"
    ) in message
    assert (
        "attempted RecordMarker(activity_type='authorize_card', marker_name='local_activity', "
        f"seq=1) at tests/sdk/test_local_activity_replay.py:{_line('SWAPPED_LOCAL')}"
    ) in message
    assert info.value.event_id == marker.id
    assert info.value.cause.value == "nondeterminism"


def test_a_command_that_differs_before_the_local_activity_is_reported_first() -> None:
    sim = recorded_billing()
    with pytest.raises(NondeterminismError) as info:
        replay(sim.events, [billing_notifies_first])
    message = str(info.value)
    assert "the history recorded MarkerRecorded(activity_type='charge_card'" in message
    assert (
        "attempted ScheduleActivity(activity_type='notify', seq=1) at "
        f"tests/sdk/test_local_activity_replay.py:{_line('NOTIFY_FIRST')}"
    ) in message


def test_the_second_of_two_local_activities_swapped_in_one_task() -> None:
    sim = Sim(twice_v1, "o-1")
    sim.start_task()
    commands = _run_locals(sim, sim.feed())
    assert [type(c) for c in commands] == [cmd.RecordMarker, cmd.RecordMarker, cmd.CompleteWorkflow]
    sim.complete(commands)
    sim.check()
    replay(sim.events, [twice_v1])
    second = sim.history.find(ev.MarkerRecorded, seq=2)
    with pytest.raises(NondeterminismError) as info:
        replay(sim.events, [twice_swapped])
    assert info.value.event_id == second.id
    assert "MarkerRecorded(activity_type='charge_card', marker_name='local_activity', seq=2)" in (
        info.value.recorded
    )
    assert "RecordMarker(activity_type='authorize_card', marker_name='local_activity', seq=2)" in (
        info.value.attempted
    )


def test_a_marker_without_an_activity_type_replays_as_before() -> None:
    """Markers written without ``activity_type`` (hand-written or older histories) cannot be
    checked: they resolve the local activity at their seq, whatever its type."""
    sim = recorded_billing()
    events = []
    for event in sim.events:
        a = event.attributes
        if isinstance(a, ev.MarkerRecorded):
            details = {k: v for k, v in a.details.items() if k != "activity_type"}
            event = dataclasses.replace(event, attributes=dataclasses.replace(a, details=details))
        events.append(event)
    replay(events, [billing_v1])
    replay(events, [billing_swapped])


def test_a_live_instance_checks_the_recorded_marker_type_of_its_own_local_activity() -> None:
    """The next feed checks what the server recorded for the live activation's marker."""
    sim = Sim(billing_v1, "o-7")
    sim.start_task()
    [marker, timer] = _run_locals(sim, sim.feed())
    assert isinstance(marker, cmd.RecordMarker)
    other = {**marker.details, "activity_type": to_payload("authorize_card")}
    sim.complete([dataclasses.replace(marker, details=other), timer])
    sim.timer_fired(1)
    sim.start_task()
    with pytest.raises(NondeterminismError, match="activity_type='authorize_card'"):
        sim.feed()
