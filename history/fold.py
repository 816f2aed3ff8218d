"""The pure fold of events into ``WorkflowState``: ``apply(state, event)`` and ``fold(events)``.

No I/O, clock or randomness: the server and the SDK share it. One small handler per event type,
dispatched through a dict; an event that cannot follow the state raises ``InvalidHistoryError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from chronicle.history import events as ev
from chronicle.history.errors import InvalidHistoryError
from chronicle.history.state import (
    PendingActivity,
    PendingChild,
    PendingExternal,
    PendingTimer,
    RunStatus,
    WorkflowState,
    WorkflowTaskState,
    evolve,
)

_Handler = Callable[[WorkflowState, ev.Event, Any], WorkflowState]


def _without(mapping: dict[Any, Any], key: Any, what: str, event: ev.Event) -> dict[Any, Any]:
    if key not in mapping:
        raise InvalidHistoryError(f"event {event.id} ({event.type}) refers to unknown {what} {key}")
    copy = dict(mapping)
    del copy[key]
    return copy


def _visible(state: WorkflowState, event: ev.Event, **changes: Any) -> WorkflowState:
    """A change that the workflow code must react to (it makes a workflow task due)."""
    return evolve(state, last_workflow_visible_event_id=event.id, **changes)


def _close(
    state: WorkflowState, event: ev.Event, status: RunStatus, **changes: Any
) -> WorkflowState:
    return evolve(
        state,
        status=status,
        close_time=event.time,
        close_event_id=event.id,
        workflow_task=None,
        **changes,
    )


# ---------------------------------------------------------------- lifecycle


def _started(state: WorkflowState, event: ev.Event, a: ev.WorkflowStarted) -> WorkflowState:
    if event.id != 1:
        raise InvalidHistoryError(
            f"event {event.id} ({event.type}): WorkflowStarted must be event 1, and only event 1"
        )
    return evolve(
        state,
        workflow_type=a.workflow_type,
        task_queue=a.task_queue,
        workflow_task_timeout=a.workflow_task_timeout,
        start_time=event.time,
        last_workflow_visible_event_id=event.id,
        awaiting_start_delay=a.start_delay is not None and a.start_delay > timedelta(0),
    )


def _completed(state: WorkflowState, event: ev.Event, a: Any) -> WorkflowState:
    return _close(state, event, RunStatus.COMPLETED)


def _failed(state: WorkflowState, event: ev.Event, a: ev.WorkflowFailed) -> WorkflowState:
    return _close(state, event, RunStatus.FAILED, new_run_id=a.new_run_id)


def _canceled(state: WorkflowState, event: ev.Event, a: Any) -> WorkflowState:
    return _close(state, event, RunStatus.CANCELED)


def _terminated(state: WorkflowState, event: ev.Event, a: Any) -> WorkflowState:
    return _close(state, event, RunStatus.TERMINATED)


def _timed_out(state: WorkflowState, event: ev.Event, a: Any) -> WorkflowState:
    return _close(state, event, RunStatus.TIMED_OUT)


def _continued(
    state: WorkflowState, event: ev.Event, a: ev.WorkflowContinuedAsNew
) -> WorkflowState:
    return _close(state, event, RunStatus.CONTINUED_AS_NEW, new_run_id=a.new_run_id)


def _cancel_requested(state: WorkflowState, event: ev.Event, a: Any) -> WorkflowState:
    return _visible(state, event, cancel_requested=True)


# ---------------------------------------------------------------- workflow tasks


def _wft_scheduled(
    state: WorkflowState, event: ev.Event, a: ev.WorkflowTaskScheduled
) -> WorkflowState:
    if state.workflow_task is not None:
        raise InvalidHistoryError(
            f"event {event.id}: workflow task scheduled while task "
            f"{state.workflow_task.scheduled_event_id} is outstanding"
        )
    task = WorkflowTaskState(
        scheduled_event_id=event.id,
        task_queue=a.task_queue,
        attempt=a.attempt,
        timeout=a.start_to_close_timeout,
    )
    return evolve(state, workflow_task=task, awaiting_start_delay=False)


def _wft_started(state: WorkflowState, event: ev.Event, a: ev.WorkflowTaskStarted) -> WorkflowState:
    task = state.workflow_task
    if task is None or task.scheduled_event_id != a.scheduled_event_id or task.started_event_id:
        raise InvalidHistoryError(
            f"event {event.id}: WorkflowTaskStarted for task {a.scheduled_event_id}, "
            "which is not scheduled"
        )
    return evolve(state, workflow_task=evolve(task, started_event_id=event.id))


def _check_started(
    state: WorkflowState, event: ev.Event, a: Any, *, may_be_unstarted: bool = False
) -> None:
    """The event ends the outstanding task: same scheduled and started ids. Only a timeout may
    end a task that no worker started."""
    task = state.workflow_task
    if (
        task is None
        or task.scheduled_event_id != a.scheduled_event_id
        or task.started_event_id != a.started_event_id
        or (not a.started_event_id and not may_be_unstarted)
    ):
        raise InvalidHistoryError(
            f"event {event.id} ({event.type}) answers workflow task {a.scheduled_event_id} "
            f"started at {a.started_event_id}, which is not the started task"
        )


def _wft_completed(
    state: WorkflowState, event: ev.Event, a: ev.WorkflowTaskCompleted
) -> WorkflowState:
    _check_started(state, event, a)
    return evolve(
        state,
        workflow_task=None,
        workflow_task_failures=0,
        last_completed_started_event_id=a.started_event_id,
    )


def _wft_failed(state: WorkflowState, event: ev.Event, a: Any) -> WorkflowState:
    _check_started(state, event, a, may_be_unstarted=isinstance(a, ev.WorkflowTaskTimedOut))
    # A task refused because events arrived while it ran (it tried to close the run) is no
    # failure of the code: the next task, with those events, is due at once.
    unhandled = getattr(a, "cause", None) is ev.WorkflowTaskFailedCause.UNHANDLED_EVENTS
    # The events the failed attempt saw are still unseen: the retry must see them.
    return evolve(
        state,
        workflow_task=None,
        workflow_task_failures=0 if unhandled else state.workflow_task_failures + 1,
        last_workflow_visible_event_id=max(
            state.last_workflow_visible_event_id, a.started_event_id
        ),
    )


# ---------------------------------------------------------------- activities


def _act_scheduled(state: WorkflowState, event: ev.Event, a: ev.ActivityScheduled) -> WorkflowState:
    pending = PendingActivity(
        scheduled_event_id=event.id,
        seq=a.seq,
        activity_id=a.activity_id,
        activity_type=a.activity_type,
        task_queue=a.task_queue,
    )
    return evolve(state, pending_activities={**state.pending_activities, event.id: pending})


def _act_resolved(state: WorkflowState, event: ev.Event, a: Any) -> WorkflowState:
    activities = _without(state.pending_activities, a.scheduled_event_id, "activity", event)
    return _visible(state, event, pending_activities=activities)


def _act_cancel_requested(state: WorkflowState, event: ev.Event, a: Any) -> WorkflowState:
    current = state.pending_activities.get(a.scheduled_event_id)
    if current is None:
        raise InvalidHistoryError(
            f"event {event.id}: cancel of unknown activity {a.scheduled_event_id}"
        )
    activities = {
        **state.pending_activities,
        a.scheduled_event_id: evolve(current, cancel_requested=True),
    }
    return evolve(state, pending_activities=activities)


# ---------------------------------------------------------------- timers


def _timer_started(state: WorkflowState, event: ev.Event, a: ev.TimerStarted) -> WorkflowState:
    timer = PendingTimer(started_event_id=event.id, seq=a.seq, fire_at=event.time + a.duration)
    return evolve(state, pending_timers={**state.pending_timers, event.id: timer})


def _timer_fired(state: WorkflowState, event: ev.Event, a: Any) -> WorkflowState:
    timers = _without(state.pending_timers, a.started_event_id, "timer", event)
    return _visible(state, event, pending_timers=timers)


def _timer_canceled(state: WorkflowState, event: ev.Event, a: Any) -> WorkflowState:
    return evolve(
        state, pending_timers=_without(state.pending_timers, a.started_event_id, "timer", event)
    )


# ---------------------------------------------------------------- signals, updates, markers


def _signal(state: WorkflowState, event: ev.Event, a: Any) -> WorkflowState:
    return _visible(state, event)


def _update_accepted(state: WorkflowState, event: ev.Event, a: ev.UpdateAccepted) -> WorkflowState:
    return _visible(state, event, pending_updates={**state.pending_updates, a.update_id: event.id})


def _update_completed(
    state: WorkflowState, event: ev.Event, a: ev.UpdateCompleted
) -> WorkflowState:
    return evolve(
        state, pending_updates=_without(state.pending_updates, a.update_id, "update", event)
    )


def _marker(state: WorkflowState, event: ev.Event, a: Any) -> WorkflowState:
    return state


# ---------------------------------------------------------------- children and externals


def _child_initiated(
    state: WorkflowState, event: ev.Event, a: ev.ChildWorkflowInitiated
) -> WorkflowState:
    child = PendingChild(
        initiated_event_id=event.id,
        seq=a.seq,
        workflow_id=a.workflow_id,
        workflow_type=a.workflow_type,
        parent_close_policy=a.parent_close_policy,
    )
    return evolve(state, pending_children={**state.pending_children, event.id: child})


def _child_started(
    state: WorkflowState, event: ev.Event, a: ev.ChildWorkflowStarted
) -> WorkflowState:
    child = state.pending_children.get(a.initiated_event_id)
    if child is None:
        raise InvalidHistoryError(f"event {event.id}: unknown child {a.initiated_event_id}")
    children = {**state.pending_children, a.initiated_event_id: evolve(child, run_id=a.run_id)}
    return _visible(state, event, pending_children=children)


def _child_closed(state: WorkflowState, event: ev.Event, a: Any) -> WorkflowState:
    children = _without(state.pending_children, a.initiated_event_id, "child workflow", event)
    return _visible(state, event, pending_children=children)


def _external_initiated(kind: str) -> _Handler:
    def handler(state: WorkflowState, event: ev.Event, a: Any) -> WorkflowState:
        pending = PendingExternal(
            initiated_event_id=event.id, seq=a.seq, kind=kind, workflow_id=a.workflow_id
        )
        return evolve(state, pending_externals={**state.pending_externals, event.id: pending})

    return handler


def _external_resolved(state: WorkflowState, event: ev.Event, a: Any) -> WorkflowState:
    externals = _without(state.pending_externals, a.initiated_event_id, "external request", event)
    return _visible(state, event, pending_externals=externals)


_HANDLERS: dict[type[Any], _Handler] = {
    ev.WorkflowStarted: _started,
    ev.WorkflowCompleted: _completed,
    ev.WorkflowFailed: _failed,
    ev.WorkflowCanceled: _canceled,
    ev.WorkflowTerminated: _terminated,
    ev.WorkflowTimedOut: _timed_out,
    ev.WorkflowContinuedAsNew: _continued,
    ev.WorkflowCancelRequested: _cancel_requested,
    ev.WorkflowTaskScheduled: _wft_scheduled,
    ev.WorkflowTaskStarted: _wft_started,
    ev.WorkflowTaskCompleted: _wft_completed,
    ev.WorkflowTaskFailed: _wft_failed,
    ev.WorkflowTaskTimedOut: _wft_failed,
    ev.ActivityScheduled: _act_scheduled,
    ev.ActivityCompleted: _act_resolved,
    ev.ActivityFailed: _act_resolved,
    ev.ActivityTimedOut: _act_resolved,
    ev.ActivityCanceled: _act_resolved,
    ev.ActivityCancelRequested: _act_cancel_requested,
    ev.TimerStarted: _timer_started,
    ev.TimerFired: _timer_fired,
    ev.TimerCanceled: _timer_canceled,
    ev.SignalReceived: _signal,
    ev.UpdateAccepted: _update_accepted,
    ev.UpdateCompleted: _update_completed,
    ev.MarkerRecorded: _marker,
    ev.ChildWorkflowInitiated: _child_initiated,
    ev.ChildWorkflowStarted: _child_started,
    ev.ChildWorkflowStartFailed: _child_closed,
    ev.ChildWorkflowCompleted: _child_closed,
    ev.ChildWorkflowFailed: _child_closed,
    ev.ExternalSignalInitiated: _external_initiated("signal"),
    ev.ExternalCancelInitiated: _external_initiated("cancel"),
    ev.ExternalSignalResolved: _external_resolved,
    ev.ExternalCancelResolved: _external_resolved,
}
assert set(_HANDLERS) == set(ev.ATTRIBUTE_CLASSES), "every event type needs a fold handler"


def apply(state: WorkflowState, event: ev.Event) -> WorkflowState:
    """The state after ``event``; ``InvalidHistoryError`` if it cannot follow ``state``."""
    if event.id != state.next_event_id:
        raise InvalidHistoryError(f"expected event {state.next_event_id}, got event {event.id}")
    if not state.is_open:
        raise InvalidHistoryError(f"event {event.id} ({event.type}) after the run closed")
    if event.id == 1 and not isinstance(event.attributes, ev.WorkflowStarted):
        raise InvalidHistoryError(
            f"event 1 ({event.type}): a history starts with WorkflowStarted as event 1"
        )
    handler = _HANDLERS[type(event.attributes)]
    return evolve(handler(state, event, event.attributes), next_event_id=event.id + 1)


def fold(events: Iterable[ev.Event], state: WorkflowState | None = None) -> WorkflowState:
    """Fold ``events`` (in order) onto ``state`` (default: an empty run)."""
    current = state if state is not None else WorkflowState()
    for event in events:
        current = apply(current, event)
    return current
