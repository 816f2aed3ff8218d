"""Pure parts of the engine: the task generator, the generic rule, the list query parser."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from chronicle.history import events as ev
from chronicle.history.state import WorkflowState
from chronicle.history.values import RetryPolicy
from chronicle.server import errors
from chronicle.server.engine import list_query, tasks
from chronicle.server.engine.activity_task import _backoff
from chronicle.server.engine.transition import plan

NOW = datetime(2030, 1, 1, tzinfo=UTC)
STARTED = ev.WorkflowStarted(workflow_type="wf", task_queue="q", run_timeout=timedelta(minutes=5))


def _running() -> WorkflowState:
    """A run whose first workflow task was started and completed."""
    state = plan(WorkflowState(), [STARTED], NOW, sticky_identity="").state
    return plan(
        state, [ev.WorkflowTaskStarted(scheduled_event_id=2)], NOW, sticky_identity=""
    ).state


def test_start_schedules_a_task_and_arms_the_run_timeout() -> None:
    planned = plan(WorkflowState(), [STARTED], NOW, sticky_identity="")
    assert [e.type for e in planned.events] == ["WorkflowStarted", "WorkflowTaskScheduled"]
    assert list(planned.changes.insert_tasks) == [("workflow", 2)]
    timer = planned.changes.insert_timers[(tasks.RUN_TIMEOUT, 1)]
    assert timer.fire_at == NOW + timedelta(minutes=5)


def test_the_run_timeout_counts_from_the_end_of_the_start_delay() -> None:
    """A retry's back-off is its start delay: the run timeout starts after it (Temporal), the
    execution timeout does not."""
    delayed = replace(
        STARTED,
        start_delay=timedelta(minutes=7),
        execution_timeout=timedelta(hours=1),
        attempt=2,
    )
    planned = plan(WorkflowState(), [delayed], NOW, sticky_identity="")
    timers = planned.changes.insert_timers
    assert timers[(tasks.RUN_TIMEOUT, 1)].fire_at == NOW + timedelta(minutes=12)
    assert timers[(tasks.EXECUTION_TIMEOUT, 1)].fire_at == NOW + timedelta(hours=1)
    assert timers[(tasks.START_DELAY, 1)].fire_at == NOW + timedelta(minutes=7)


def test_rows_created_and_made_moot_in_one_batch_cancel_out() -> None:
    state = _running()
    planned = plan(
        state,
        [
            ev.WorkflowTaskCompleted(scheduled_event_id=2, started_event_id=3),
            ev.ActivityScheduled(seq=1, activity_id="a", activity_type="t", task_queue="q"),
            ev.ActivityCancelRequested(scheduled_event_id=5),
            ev.ActivityCanceled(scheduled_event_id=5),
            ev.TimerStarted(seq=1, duration=timedelta(seconds=5)),
            ev.TimerCanceled(started_event_id=8),
        ],
        NOW,
        sticky_identity="w",
    )
    changes = planned.changes
    assert not changes.insert_activities
    assert ("activity", 5) not in changes.insert_tasks
    assert (tasks.USER_TIMER, 8) not in changes.insert_timers
    # ActivityCanceled is visible to the workflow: the generic rule schedules a sticky task.
    assert planned.events[-1].type == "WorkflowTaskScheduled"
    assert changes.insert_tasks[("workflow", 10)].sticky_identity == "w"


def test_a_closing_batch_deletes_everything_and_inserts_nothing() -> None:
    planned = plan(
        _running(),
        [
            ev.WorkflowTaskCompleted(scheduled_event_id=2, started_event_id=3),
            ev.ActivityScheduled(seq=1, activity_id="a", activity_type="t", task_queue="q"),
            ev.WorkflowCompleted(),
        ],
        NOW,
        sticky_identity="",
    )
    assert planned.changes.delete_all
    assert not planned.changes.insert_tasks
    assert not planned.changes.insert_activities
    assert not planned.changes.insert_timers


def test_retry_delays_are_capped_without_overflow() -> None:
    assert tasks.wft_retry_delay(1) == timedelta(seconds=1)
    assert tasks.wft_retry_delay(3) == timedelta(seconds=4)
    assert tasks.wft_retry_delay(10**6) == timedelta(seconds=60)
    assert _backoff(RetryPolicy(), 10**5) == timedelta(seconds=100)


def test_list_query() -> None:
    parsed = list_query.parse("status = 'running' and type = \"o'rder\" AND task_queue='q'")
    assert (parsed.status, parsed.workflow_type, parsed.task_queue) == ("running", "o'rder", "q")
    assert list_query.parse("") == list_query.ListFilter()
    assert list_query.parse("workflow_id = 'it''s'").workflow_id == "it's"
    assert list_query.parse("type = 'a' AND type = 'b'").impossible
    with pytest.raises(errors.InvalidArgument, match="unknown list query field 'colour'"):
        list_query.parse("colour = 'red'")
