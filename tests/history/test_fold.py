"""Property tests of the pure fold (STYLE.md habit 4) over generated valid histories, and
example tests of the transitions it must reject."""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronicle.history import codec
from chronicle.history import events as ev
from chronicle.history.errors import InvalidHistoryError
from chronicle.history.fold import apply, fold
from chronicle.history.state import RunStatus, WorkflowState
from chronicle.history.values import Failure
from tests.history.history_strategies import (
    ACTIVITY_ANSWERS,
    CHILD_CLOSES,
    START_TIME,
    TASK_ENDS,
    VISIBLE_TYPES,
    histories,
    values_of,
)

FOLD_SETTINGS = settings(max_examples=35, deadline=None)
_CLOSE_STATUS = {
    ev.WorkflowCompleted: RunStatus.COMPLETED,
    ev.WorkflowFailed: RunStatus.FAILED,
    ev.WorkflowCanceled: RunStatus.CANCELED,
    ev.WorkflowTerminated: RunStatus.TERMINATED,
    ev.WorkflowTimedOut: RunStatus.TIMED_OUT,
    ev.WorkflowContinuedAsNew: RunStatus.CONTINUED_AS_NEW,
}


def _event(event_id: int, attributes: ev.EventAttributes) -> ev.Event:
    return ev.Event(
        id=event_id, time=START_TIME + timedelta(seconds=event_id), attributes=attributes
    )


def _renumbered(events: list[ev.Event]) -> list[ev.Event]:
    return [dataclasses.replace(e, id=i) for i, e in enumerate(events, start=1)]


# ---------------------------------------------------------------- an independent model
# Computed by set algebra over the whole prefix, not incrementally like the fold.


def _ids(events: list[ev.Event], *types: type[Any]) -> set[int]:
    return {e.id for e in events if isinstance(e.attributes, types)}


def _refs(events: list[ev.Event], types: tuple[type[Any], ...], name: str) -> set[Any]:
    return {getattr(e.attributes, name) for e in events if isinstance(e.attributes, types)}


def _by_id(events: list[ev.Event]) -> dict[int, ev.Event]:
    return {e.id: e for e in events}


def _check_against_model(events: list[ev.Event], state: WorkflowState) -> None:
    by_id = _by_id(events)
    assert state.next_event_id == len(events) + 1

    activities = _ids(events, ev.ActivityScheduled) - _refs(
        events, ACTIVITY_ANSWERS, "scheduled_event_id"
    )
    cancelled = _refs(events, (ev.ActivityCancelRequested,), "scheduled_event_id") & activities
    assert set(state.pending_activities) == activities
    for key, pending in state.pending_activities.items():
        scheduled = by_id[key].attributes
        assert isinstance(scheduled, ev.ActivityScheduled)
        assert (
            pending.scheduled_event_id,
            pending.seq,
            pending.activity_type,
            pending.activity_id,
        ) == (key, scheduled.seq, scheduled.activity_type, scheduled.activity_id)
        assert pending.cancel_requested == (key in cancelled)

    timers = _ids(events, ev.TimerStarted) - _refs(
        events, (ev.TimerFired, ev.TimerCanceled), "started_event_id"
    )
    assert set(state.pending_timers) == timers
    for key, timer in state.pending_timers.items():
        timer_event = by_id[key]
        assert isinstance(timer_event.attributes, ev.TimerStarted)
        assert timer.seq == timer_event.attributes.seq
        assert timer.fire_at == timer_event.time + timer_event.attributes.duration

    children = _ids(events, ev.ChildWorkflowInitiated) - _refs(
        events, CHILD_CLOSES, "initiated_event_id"
    )
    assert set(state.pending_children) == children
    run_ids = {
        e.attributes.initiated_event_id: e.attributes.run_id
        for e in events
        if isinstance(e.attributes, ev.ChildWorkflowStarted)
    }
    for key, child in state.pending_children.items():
        assert child.run_id == run_ids.get(key, "")

    externals = _ids(events, ev.ExternalSignalInitiated, ev.ExternalCancelInitiated) - _refs(
        events, (ev.ExternalSignalResolved, ev.ExternalCancelResolved), "initiated_event_id"
    )
    assert set(state.pending_externals) == externals

    accepted = {
        e.attributes.update_id: e.id for e in events if isinstance(e.attributes, ev.UpdateAccepted)
    }
    done = _refs(events, (ev.UpdateCompleted,), "update_id")
    assert state.pending_updates == {k: v for k, v in accepted.items() if k not in done}

    # Workflow tasks.
    outstanding = _ids(events, ev.WorkflowTaskScheduled) - _refs(
        events, TASK_ENDS, "scheduled_event_id"
    )
    closes = [e for e in events if type(e.attributes) in ev.CLOSE_EVENT_TYPES]
    is_open = not closes
    if is_open and outstanding:
        (task_id,) = outstanding
        assert state.workflow_task is not None
        assert state.workflow_task.scheduled_event_id == task_id
        started = {
            e.id
            for e in events
            if isinstance(e.attributes, ev.WorkflowTaskStarted)
            and e.attributes.scheduled_event_id == task_id
        }
        assert state.workflow_task.started_event_id == (max(started) if started else 0)
    else:
        assert state.workflow_task is None

    last_completed = max(_refs(events, (ev.WorkflowTaskCompleted,), "started_event_id"), default=0)
    assert state.last_completed_started_event_id == last_completed
    # Visible: what workflow code reacts to, plus what a failed task saw (it must be re-seen).
    visible = _ids(events, *VISIBLE_TYPES) | _refs(
        events, (ev.WorkflowTaskFailed, ev.WorkflowTaskTimedOut), "started_event_id"
    )
    needs = is_open and not outstanding and max(visible, default=0) > last_completed
    assert state.needs_workflow_task == needs

    failed_since = _ids(events, ev.WorkflowTaskFailed, ev.WorkflowTaskTimedOut)
    last_completed_id = max(_ids(events, ev.WorkflowTaskCompleted), default=0)
    assert state.workflow_task_failures == len({i for i in failed_since if i > last_completed_id})

    assert state.cancel_requested == bool(_ids(events, ev.WorkflowCancelRequested))
    if closes:
        (close,) = closes
        assert close is events[-1]
        assert state.status is _CLOSE_STATUS[type(close.attributes)]
        assert (state.close_event_id, state.close_time) == (close.id, close.time)
    else:
        assert state.status is RunStatus.RUNNING
        assert state.close_time is None


# ---------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(histories())
def test_every_prefix_folds_and_matches_the_model(events: list[ev.Event]) -> None:
    state = WorkflowState()
    for n, event in enumerate(events, start=1):
        state = apply(state, event)
        _check_against_model(events[:n], state)
        assert codec.state_from_json(codec.state_to_json(state)) == state


@FOLD_SETTINGS
@given(histories(), st.data())
def test_fold_is_deterministic_and_incremental(events: list[ev.Event], data: st.DataObject) -> None:
    whole = fold(events)
    assert fold(list(events)) == whole
    cut = data.draw(st.integers(0, len(events)))
    head = fold(events[:cut])
    snapshot = copy.deepcopy(head)
    assert fold(events[cut:], head) == whole
    assert head == snapshot  # folding on did not mutate the earlier state
    # Resuming from a snapshot read back from JSON (the server's path) gives the same state.
    assert fold(events[cut:], codec.state_from_json(codec.state_to_json(head))) == whole


@FOLD_SETTINGS
@given(histories(closed=True), st.data())
def test_nothing_may_follow_a_close(events: list[ev.Event], data: st.DataObject) -> None:
    assert type(events[-1].attributes) in ev.CLOSE_EVENT_TYPES
    state = fold(events)
    assert not state.is_open
    assert not state.needs_workflow_task
    pending_timer = sorted(state.pending_timers)
    extras: list[ev.EventAttributes] = [
        ev.SignalReceived(signal_name="late"),
        ev.WorkflowTaskScheduled(task_queue="q"),
        ev.WorkflowTerminated(reason="again"),
        ev.WorkflowCancelRequested(),
        *(ev.TimerFired(started_event_id=t) for t in pending_timer),
    ]
    extra = data.draw(st.sampled_from(extras))
    with pytest.raises(InvalidHistoryError, match="after the run closed"):
        apply(state, _event(len(events) + 1, extra))


@FOLD_SETTINGS
@given(histories(closed=False), st.data())
def test_answering_an_unknown_activity_or_timer(
    events: list[ev.Event], data: st.DataObject
) -> None:
    state = fold(events)
    n = len(events)
    # Unknown: never scheduled, already answered, or an id of another kind of event.
    not_activity = sorted(set(range(n + 3)) - set(state.pending_activities))
    not_timer = sorted(set(range(n + 3)) - set(state.pending_timers))
    target_activity = data.draw(st.sampled_from(not_activity))
    target_timer = data.draw(st.sampled_from(not_timer))
    answers: list[ev.EventAttributes] = [
        ev.ActivityCompleted(scheduled_event_id=target_activity),
        ev.ActivityFailed(scheduled_event_id=target_activity, failure=Failure(message="x")),
        ev.ActivityTimedOut(scheduled_event_id=target_activity, failure=Failure(message="x")),
        ev.ActivityCanceled(scheduled_event_id=target_activity),
        ev.ActivityCancelRequested(scheduled_event_id=target_activity),
        ev.TimerFired(started_event_id=target_timer),
        ev.TimerCanceled(started_event_id=target_timer),
    ]
    answer = data.draw(st.sampled_from(answers))
    with pytest.raises(InvalidHistoryError, match=r"unknown (activity|timer)"):
        apply(state, _event(n + 1, answer))


@FOLD_SETTINGS
@given(histories(), st.data())
def test_ids_must_be_one_to_n(events: list[ev.Event], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(events) - 1))
    mutations = ["gap", "duplicate", "shift"] + (["reorder"] if len(events) > 1 else [])
    mutation = data.draw(st.sampled_from(mutations))
    broken = list(events)
    if mutation == "gap":
        jump = data.draw(st.integers(1, 5))
        broken[index:] = [dataclasses.replace(e, id=e.id + jump) for e in broken[index:]]
    elif mutation == "duplicate":
        broken.insert(index, broken[index])
    elif mutation == "reorder":
        other = data.draw(st.integers(0, len(events) - 1).filter(lambda i: i != index))
        broken[index], broken[other] = broken[other], broken[index]
    else:
        delta = data.draw(st.sampled_from([-1, 1]))
        broken[index] = dataclasses.replace(broken[index], id=broken[index].id + delta)
    with pytest.raises(InvalidHistoryError, match=r"expected event \d+, got event \d+"):
        fold(broken)


@settings(max_examples=15, deadline=None)
@given(histories(closed=False))
def test_a_second_workflow_started_is_rejected(events: list[ev.Event]) -> None:
    with pytest.raises(InvalidHistoryError, match="must be event 1"):
        apply(fold(events), _event(len(events) + 1, events[0].attributes))


_NOT_STARTED = [cls for cls in ev.ATTRIBUTE_CLASSES if cls is not ev.WorkflowStarted]


@FOLD_SETTINGS
@given(histories(), st.data())
def test_a_history_that_does_not_start_with_workflow_started_is_rejected(
    events: list[ev.Event], data: st.DataObject
) -> None:
    """Event 1 of any other type is rejected before its own checks, whatever follows it."""
    cls = data.draw(st.sampled_from(_NOT_STARTED))
    first = _event(1, data.draw(values_of(cls)))
    for broken in ([first, *events[1:]], [first], _renumbered(events[1:]) or [first]):
        first_type = broken[0].type
        with pytest.raises(
            InvalidHistoryError,
            match=rf"^event 1 \({first_type}\): a history starts with WorkflowStarted as event 1$",
        ):
            fold(broken)


@FOLD_SETTINGS
@given(histories(closed=False), st.data())
def test_a_workflow_started_anywhere_but_event_1_is_rejected(
    events: list[ev.Event], data: st.DataObject
) -> None:
    at = data.draw(st.integers(1, len(events)))
    again = ev.WorkflowStarted(workflow_type="wf", task_queue="q")
    broken = _renumbered([*events[:at], _event(at + 1, again), *events[at:]])
    with pytest.raises(
        InvalidHistoryError,
        match=rf"^event {at + 1} \(WorkflowStarted\): WorkflowStarted must be event 1, "
        "and only event 1$",
    ):
        fold(broken)


def test_generator_produces_the_core_kinds_of_events() -> None:
    """Guard against a generator that silently stopped exploring (the tour below covers every
    event type deterministically; this checks the random side still does real work)."""
    seen: set[type[Any]] = set()
    lengths: list[int] = []

    @settings(max_examples=40, deadline=None, database=None, derandomize=True)
    @given(histories(max_steps=60))
    def collect(events: list[ev.Event]) -> None:
        seen.update(type(e.attributes) for e in events)
        lengths.append(len(events))

    collect()
    core = {
        ev.WorkflowTaskCompleted,
        ev.WorkflowTaskFailed,
        ev.ActivityScheduled,
        ev.TimerStarted,
        ev.TimerFired,
        ev.SignalReceived,
        ev.ChildWorkflowInitiated,
        ev.MarkerRecorded,
        ev.ExternalSignalInitiated,
        ev.UpdateAccepted,
    }
    assert core <= seen
    assert seen & set(ACTIVITY_ANSWERS)
    assert seen & ev.CLOSE_EVENT_TYPES
    assert max(lengths) >= 40


def _tour(close: ev.EventAttributes) -> list[ev.Event]:
    """A hand-written history with every non-close event type, then ``close``."""
    failure = Failure(message="x")
    attributes: list[ev.EventAttributes] = [
        ev.WorkflowStarted(workflow_type="wf", task_queue="q"),  # 1
        ev.WorkflowTaskScheduled(task_queue="q"),  # 2
        ev.WorkflowTaskStarted(scheduled_event_id=2),  # 3
        ev.WorkflowTaskCompleted(scheduled_event_id=2, started_event_id=3),  # 4
        ev.ActivityScheduled(seq=1, activity_id="a1", activity_type="t", task_queue="q"),  # 5
        ev.ActivityScheduled(seq=2, activity_id="a2", activity_type="t", task_queue="q"),  # 6
        ev.ActivityScheduled(seq=3, activity_id="a3", activity_type="t", task_queue="q"),  # 7
        ev.ActivityScheduled(seq=4, activity_id="a4", activity_type="t", task_queue="q"),  # 8
        ev.TimerStarted(seq=1, duration=timedelta(seconds=5)),  # 9
        ev.TimerStarted(seq=2, duration=timedelta(minutes=5)),  # 10
        ev.MarkerRecorded(seq=1, marker_name="patch"),  # 11
        ev.ChildWorkflowInitiated(seq=1, workflow_id="c1", workflow_type="k", task_queue="q"),
        ev.ChildWorkflowInitiated(seq=2, workflow_id="c2", workflow_type="k", task_queue="q"),
        ev.ChildWorkflowInitiated(seq=3, workflow_id="c3", workflow_type="k", task_queue="q"),
        ev.ExternalSignalInitiated(seq=1, workflow_id="o", signal_name="s"),  # 15
        ev.ExternalCancelInitiated(seq=1, workflow_id="o"),  # 16
        ev.SignalReceived(signal_name="s"),  # 17
        ev.UpdateAccepted(update_id="u", update_name="n"),  # 18
        ev.WorkflowCancelRequested(),  # 19
        ev.ActivityCompleted(scheduled_event_id=5),  # 20
        ev.ActivityFailed(scheduled_event_id=6, failure=failure),  # 21
        ev.ActivityTimedOut(scheduled_event_id=7, failure=failure),  # 22
        ev.TimerFired(started_event_id=9),  # 23
        ev.ChildWorkflowStarted(initiated_event_id=12, run_id="r12"),  # 24
        ev.ChildWorkflowStarted(initiated_event_id=13, run_id="r13"),  # 25
        ev.ChildWorkflowStartFailed(initiated_event_id=14, failure=failure),  # 26
        ev.ExternalSignalResolved(initiated_event_id=15),  # 27
        ev.WorkflowTaskScheduled(task_queue="q"),  # 28
        ev.WorkflowTaskStarted(scheduled_event_id=28),  # 29
        ev.WorkflowTaskFailed(scheduled_event_id=28, started_event_id=29),  # 30
        ev.WorkflowTaskScheduled(task_queue="q", attempt=2),  # 31
        ev.WorkflowTaskStarted(scheduled_event_id=31),  # 32
        ev.WorkflowTaskTimedOut(scheduled_event_id=31, started_event_id=32),  # 33
        ev.WorkflowTaskScheduled(task_queue="q", attempt=3),  # 34
        ev.WorkflowTaskStarted(scheduled_event_id=34),  # 35
        ev.WorkflowTaskCompleted(scheduled_event_id=34, started_event_id=35),  # 36
        # Command-events the code need not react to: no workflow task is due after them.
        ev.ActivityCancelRequested(scheduled_event_id=8),  # 37
        ev.TimerCanceled(started_event_id=10),  # 38
        ev.UpdateCompleted(update_id="u", accepted_event_id=18),  # 39
        ev.ActivityCanceled(scheduled_event_id=8),  # 40
        ev.WorkflowTaskScheduled(task_queue="q"),  # 41
        ev.WorkflowTaskStarted(scheduled_event_id=41),  # 42
        ev.ExternalCancelResolved(initiated_event_id=16, failure=failure),  # 43, mid-task
        ev.ChildWorkflowCompleted(initiated_event_id=12),  # 44, mid-task
        ev.ChildWorkflowFailed(initiated_event_id=13, failure=failure),  # 45, mid-task
        ev.WorkflowTaskCompleted(scheduled_event_id=41, started_event_id=42),  # 46
        ev.WorkflowTaskScheduled(task_queue="q"),  # 47
        ev.WorkflowTaskStarted(scheduled_event_id=47),  # 48
        ev.WorkflowTaskCompleted(scheduled_event_id=47, started_event_id=48),  # 49
    ]
    if type(close) not in ev.COMMAND_EVENT_TYPES:
        # Closed from outside while a worker holds a task: the task dies with the run.
        attributes += [
            ev.WorkflowTaskScheduled(task_queue="q"),  # 50
            ev.WorkflowTaskStarted(scheduled_event_id=50),  # 51
        ]
    attributes.append(close)
    return [_event(i, a) for i, a in enumerate(attributes, start=1)]


@pytest.mark.parametrize(
    "close",
    [
        ev.WorkflowCompleted(),
        ev.WorkflowFailed(failure=Failure(message="f")),
        ev.WorkflowCanceled(),
        ev.WorkflowContinuedAsNew(new_run_id="r2", workflow_type="wf", task_queue="q"),
        ev.WorkflowTerminated(),
        ev.WorkflowTimedOut(),
    ],
    ids=lambda a: type(a).__name__,
)
def test_tour_of_every_event_type_matches_the_model(close: ev.EventAttributes) -> None:
    events = _tour(close)
    assert {e.type for e in events} | {c.__name__ for c in ev.CLOSE_EVENT_TYPES} == set(
        ev.ATTRIBUTES_BY_TYPE
    )
    state = WorkflowState()
    for n, event in enumerate(events, start=1):
        state = apply(state, event)
        _check_against_model(events[:n], state)
        assert codec.state_from_json(codec.state_to_json(state)) == state
    assert not fold(events[:39]).needs_workflow_task
    assert fold(events[:40]).needs_workflow_task
    before_close = fold(events[:-1])
    assert before_close.needs_workflow_task is False
    assert (set(before_close.pending_activities), set(before_close.pending_children)) == (
        set(),
        set(),
    )
    assert before_close.workflow_task_failures == 0
    if isinstance(close, ev.WorkflowContinuedAsNew):
        assert fold(events).new_run_id == "r2"


# ---------------------------------------------------------------- examples: workflow tasks


def _started_run() -> list[ev.Event]:
    return [
        _event(1, ev.WorkflowStarted(workflow_type="wf", task_queue="q")),
        _event(2, ev.WorkflowTaskScheduled(task_queue="q")),
    ]


def test_first_event_must_be_workflow_started() -> None:
    with pytest.raises(InvalidHistoryError, match="expected event 1, got event 2"):
        fold([_event(2, ev.SignalReceived(signal_name="s"))])


def test_needs_a_workflow_task_after_start_until_one_is_scheduled() -> None:
    first = fold(_started_run()[:1])
    assert first.needs_workflow_task
    assert not fold(_started_run()).needs_workflow_task


def test_second_scheduled_task_while_one_is_outstanding() -> None:
    with pytest.raises(InvalidHistoryError, match="outstanding"):
        fold([*_started_run(), _event(3, ev.WorkflowTaskScheduled(task_queue="q"))])


def test_task_started_twice_or_for_another_task() -> None:
    started = _event(3, ev.WorkflowTaskStarted(scheduled_event_id=2))
    with pytest.raises(InvalidHistoryError, match="not scheduled"):
        fold([*_started_run(), started, _event(4, ev.WorkflowTaskStarted(scheduled_event_id=2))])
    with pytest.raises(InvalidHistoryError, match="not scheduled"):
        fold([*_started_run(), _event(3, ev.WorkflowTaskStarted(scheduled_event_id=1))])


@pytest.mark.parametrize("end", TASK_ENDS, ids=lambda c: c.__name__)
def test_task_end_for_another_started_id(end: type[Any]) -> None:
    history = [*_started_run(), _event(3, ev.WorkflowTaskStarted(scheduled_event_id=2))]
    with pytest.raises(InvalidHistoryError, match="not the started task"):
        fold([*history, _event(4, end(scheduled_event_id=2, started_event_id=2))])


@pytest.mark.parametrize(
    "end", [ev.WorkflowTaskCompleted, ev.WorkflowTaskFailed], ids=lambda c: c.__name__
)
def test_a_task_that_never_started_cannot_complete_or_fail(end: type[Any]) -> None:
    """Only a started task has a worker to answer it (a *timeout* may hit an unstarted one)."""
    with pytest.raises(InvalidHistoryError):
        fold([*_started_run(), _event(3, end(scheduled_event_id=2, started_event_id=0))])


@pytest.mark.parametrize("end", TASK_ENDS, ids=lambda c: c.__name__)
def test_a_task_end_must_name_the_scheduled_task(end: type[Any]) -> None:
    history = [*_started_run(), _event(3, ev.WorkflowTaskStarted(scheduled_event_id=2))]
    with pytest.raises(InvalidHistoryError):
        fold([*history, _event(4, end(scheduled_event_id=99, started_event_id=3))])


def test_events_during_a_started_task_belong_to_the_next_activation() -> None:
    history = [
        *_started_run(),
        _event(3, ev.WorkflowTaskStarted(scheduled_event_id=2)),
        _event(4, ev.SignalReceived(signal_name="s")),
        _event(5, ev.WorkflowTaskCompleted(scheduled_event_id=2, started_event_id=3)),
    ]
    state = fold(history)
    assert state.last_completed_started_event_id == 3
    assert state.last_workflow_visible_event_id == 4
    assert state.needs_workflow_task
    # Without the signal, the completed task saw everything.
    assert not fold(_renumbered([*history[:3], history[4]])).needs_workflow_task


def test_failed_task_is_retried_and_counts_failures() -> None:
    history = [
        *_started_run(),
        _event(3, ev.WorkflowTaskStarted(scheduled_event_id=2)),
        _event(4, ev.WorkflowTaskCompleted(scheduled_event_id=2, started_event_id=3)),
        _event(5, ev.SignalReceived(signal_name="s")),
    ]
    for attempt in range(3):
        base = len(history)
        history += [
            _event(base + 1, ev.WorkflowTaskScheduled(task_queue="q", attempt=attempt + 1)),
            _event(base + 2, ev.WorkflowTaskStarted(scheduled_event_id=base + 1)),
            _event(
                base + 3,
                ev.WorkflowTaskFailed(scheduled_event_id=base + 1, started_event_id=base + 2),
            ),
        ]
        state = fold(history)
        assert state.workflow_task_failures == attempt + 1
        assert state.needs_workflow_task
    base = len(history)
    history += [
        _event(base + 1, ev.WorkflowTaskScheduled(task_queue="q", attempt=4)),
        _event(base + 2, ev.WorkflowTaskStarted(scheduled_event_id=base + 1)),
        _event(
            base + 3,
            ev.WorkflowTaskCompleted(scheduled_event_id=base + 1, started_event_id=base + 2),
        ),
    ]
    state = fold(history)
    assert state.workflow_task_failures == 0
    assert not state.needs_workflow_task


def test_unknown_child_external_and_update_answers() -> None:
    state = fold(_started_run())
    failure = Failure(message="x")
    for answer in (
        ev.ChildWorkflowStarted(initiated_event_id=1, run_id="r"),
        ev.ChildWorkflowCompleted(initiated_event_id=2),
        ev.ChildWorkflowFailed(initiated_event_id=7, failure=failure),
        ev.ChildWorkflowStartFailed(initiated_event_id=7, failure=failure),
        ev.ExternalSignalResolved(initiated_event_id=1),
        ev.ExternalCancelResolved(initiated_event_id=2),
        ev.UpdateCompleted(update_id="nope", accepted_event_id=1),
    ):
        with pytest.raises(InvalidHistoryError, match="unknown"):
            apply(state, _event(3, answer))


# ---------------------------------------------------------------- histories a real server wrote

RECORDED = sorted((Path(__file__).resolve().parents[1] / "histories").glob("*.json"))


def _without_added_defaults(exported: dict[str, Any], recorded: dict[str, Any]) -> dict[str, Any]:
    """``exported`` minus attribute keys the recorded file predates, if they hold their default
    (history-format.md, Compatibility: version 1 may gain keys that have a default)."""
    event = codec.event_from_dict(recorded)
    defaults = {f.name: f.default for f in dataclasses.fields(event.attributes)}
    attributes = {
        key: value
        for key, value in exported["attributes"].items()
        if key in recorded["attributes"] or value != defaults.get(key)
    }
    return {**exported, "attributes": attributes}


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.stem)
def test_recorded_histories_fold_and_match_the_model(path: Path) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    events = [codec.event_from_dict(item) for item in document["events"]]
    exported = [codec.event_to_dict(e) for e in events]
    assert [
        _without_added_defaults(e, r) for e, r in zip(exported, document["events"], strict=True)
    ] == document["events"]
    state = WorkflowState()
    for n, event in enumerate(events, start=1):
        state = apply(state, event)
        _check_against_model(events[:n], state)
    # Command-events sit right after the WorkflowTaskCompleted that carried them.
    for event in events:
        if type(event.attributes) in ev.COMMAND_EVENT_TYPES:
            carrier = getattr(event.attributes, "workflow_task_completed_event_id", None)
            if carrier:
                assert isinstance(events[carrier - 1].attributes, ev.WorkflowTaskCompleted)
                between = events[carrier : event.id - 1]
                assert all(type(e.attributes) in ev.COMMAND_EVENT_TYPES for e in between)
