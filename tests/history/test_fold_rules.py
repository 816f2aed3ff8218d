"""Targeted fold rules that the generated histories reach only rarely."""

from __future__ import annotations

from datetime import UTC, datetime

from chronicle.history import events as ev
from chronicle.history.fold import fold

T = datetime(2026, 1, 1, tzinfo=UTC)


def history(*attributes: ev.EventAttributes) -> list[ev.Event]:
    return [ev.Event(id=i, time=T, attributes=a) for i, a in enumerate(attributes, start=1)]


def test_unhandled_events_is_not_a_code_failure_and_makes_a_task_due_at_once() -> None:
    """A fixed worker's close refused for new events must not leave the run waiting on the
    failure back-off of the earlier buggy attempts."""
    state = fold(
        history(
            ev.WorkflowStarted(workflow_type="w", task_queue="q"),
            ev.WorkflowTaskScheduled(task_queue="q"),
            ev.WorkflowTaskStarted(scheduled_event_id=2),
            ev.WorkflowTaskFailed(scheduled_event_id=2, started_event_id=3),  # a bug
            ev.WorkflowTaskScheduled(task_queue="q", attempt=2),
            ev.WorkflowTaskStarted(scheduled_event_id=5),
            ev.SignalReceived(signal_name="s"),  # arrives while the fixed code runs
            ev.WorkflowTaskFailed(
                scheduled_event_id=5,
                started_event_id=6,
                cause=ev.WorkflowTaskFailedCause.UNHANDLED_EVENTS,
            ),
        )
    )
    assert state.workflow_task_failures == 0
    assert state.needs_workflow_task


def test_a_code_failure_counts_and_waits_for_the_retry_timer() -> None:
    state = fold(
        history(
            ev.WorkflowStarted(workflow_type="w", task_queue="q"),
            ev.WorkflowTaskScheduled(task_queue="q"),
            ev.WorkflowTaskStarted(scheduled_event_id=2),
            ev.WorkflowTaskFailed(scheduled_event_id=2, started_event_id=3),
        )
    )
    assert state.workflow_task_failures == 1
    assert state.workflow_task is None
