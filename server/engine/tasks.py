"""The task generator: new events → the task, timer and activity rows they imply. Pure.

Rows that are created and made moot within the same batch (an activity scheduled and cancelled
by one workflow-task completion) cancel out, because the single write statement cannot delete
a row it inserts. A batch that closes the run removes every row of the run and creates none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from chronicle.history import codec
from chronicle.history import events as ev
from chronicle.history.state import WorkflowState

WORKFLOW = "workflow"
ACTIVITY = "activity"

WFT_TIMEOUT = "workflow_task_timeout"
WFT_RETRY = "workflow_task_retry"
USER_TIMER = "user_timer"
ACT_START_TO_CLOSE = "activity_start_to_close"
ACT_SCHEDULE_TO_START = "activity_schedule_to_start"
ACT_SCHEDULE_TO_CLOSE = "activity_schedule_to_close"
ACT_HEARTBEAT = "activity_heartbeat"
ACT_RETRY = "activity_retry"
CHILD_CLOSED = "child_closed"
"""Timer row on a parent run, due at once: its child (``ref_id`` = initiated event) closed."""
START_DELAY = "start_delay"
"""Timer row (``ref_id`` 1) of a run started with a start delay: schedules its first task."""
RUN_TIMEOUT = "run_timeout"
EXECUTION_TIMEOUT = "execution_timeout"

ACTIVITY_TIMER_KINDS = (
    ACT_START_TO_CLOSE,
    ACT_SCHEDULE_TO_START,
    ACT_SCHEDULE_TO_CLOSE,
    ACT_HEARTBEAT,
    ACT_RETRY,
)
"""Every timer kind whose ``ref_id`` is an activity's scheduled event id."""

MAX_WFT_RETRY_DELAY = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class TaskRow:
    """A row for the ``tasks`` table (the run key is the transition's)."""

    kind: str
    task_queue: str
    scheduled_event_id: int
    sticky_identity: str = ""


@dataclass(frozen=True, slots=True)
class TimerRow:
    """A row for the ``timers`` table."""

    kind: str
    ref_id: int
    fire_at: datetime
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class ActivityRow:
    """A new ``activities`` row: attempt 1, scheduled (or started by ``started_by`` at once)."""

    scheduled_event_id: int
    scheduled_time: datetime
    attributes_json: str
    started_by: str = ""
    """The worker identity an eagerly dispatched attempt was started for ("" when queued)."""
    request_id: str = ""
    """The request id of the completion that started the attempt eagerly for ``started_by``
    and returned it only in its answer ("" otherwise: queued, or started inline); a release
    after a lost answer matches it (``lost_answers.py``)."""


@dataclass(slots=True)
class RowChanges:
    """Task/timer/activity row changes of one transition, netted within the batch."""

    insert_tasks: dict[tuple[str, int], TaskRow] = field(default_factory=dict)
    delete_tasks: set[tuple[str, int]] = field(default_factory=set)
    insert_timers: dict[tuple[str, int], TimerRow] = field(default_factory=dict)
    delete_timers: set[tuple[str, int]] = field(default_factory=set)
    insert_activities: dict[int, ActivityRow] = field(default_factory=dict)
    delete_activities: set[int] = field(default_factory=set)
    delete_all: bool = False

    def add_task(self, row: TaskRow) -> None:
        """Insert a task row."""
        self.insert_tasks[(row.kind, row.scheduled_event_id)] = row

    def remove_task(self, kind: str, scheduled_event_id: int) -> None:
        """Delete a task row (or drop its insert from this batch)."""
        if self.insert_tasks.pop((kind, scheduled_event_id), None) is None:
            self.delete_tasks.add((kind, scheduled_event_id))

    def add_timer(self, row: TimerRow) -> None:
        """Insert a timer row (an existing one of the same kind and ref is deleted first)."""
        self.delete_timers.add((row.kind, row.ref_id))
        self.insert_timers[(row.kind, row.ref_id)] = row

    def remove_timer(self, kind: str, ref_id: int) -> None:
        """Delete a timer row (or drop its insert from this batch)."""
        self.insert_timers.pop((kind, ref_id), None)
        self.delete_timers.add((kind, ref_id))

    def add_activity(self, row: ActivityRow) -> None:
        """Insert an activities row."""
        self.insert_activities[row.scheduled_event_id] = row

    def remove_activity(self, scheduled_event_id: int) -> None:
        """Delete an activity's row, task and timers (or drop their inserts)."""
        if self.insert_activities.pop(scheduled_event_id, None) is None:
            self.delete_activities.add(scheduled_event_id)
        self.remove_task(ACTIVITY, scheduled_event_id)
        for kind in ACTIVITY_TIMER_KINDS:
            self.remove_timer(kind, scheduled_event_id)

    def close_run(self) -> None:
        """The run closed: delete every row of it and insert none."""
        self.insert_tasks.clear()
        self.delete_tasks.clear()
        self.insert_timers.clear()
        self.delete_timers.clear()
        self.insert_activities.clear()
        self.delete_activities.clear()
        self.delete_all = True

    def update(self, other: RowChanges) -> None:
        """Apply ``other``'s changes after this one's."""
        if other.delete_all:
            self.close_run()
            return
        for kind, sid in other.delete_tasks:
            self.remove_task(kind, sid)
        for row in other.insert_tasks.values():
            self.add_task(row)
        for kind, ref in other.delete_timers:
            self.remove_timer(kind, ref)
        for timer in other.insert_timers.values():
            self.add_timer(timer)
        for sid in other.delete_activities:
            if self.insert_activities.pop(sid, None) is None:
                self.delete_activities.add(sid)
        self.insert_activities.update(other.insert_activities)

    @property
    def empty(self) -> bool:
        """True when nothing changes."""
        return not (
            self.insert_tasks
            or self.delete_tasks
            or self.insert_timers
            or self.delete_timers
            or self.insert_activities
            or self.delete_activities
            or self.delete_all
        )


def wft_retry_delay(failures: int) -> timedelta:
    """Back-off before retrying a workflow task after ``failures`` consecutive failures."""
    exponent = min(max(failures - 1, 0), 10)  # 2**10 s is past the cap; never overflow
    return min(timedelta(seconds=2**exponent), MAX_WFT_RETRY_DELAY)


def derive(steps: list[tuple[ev.Event, WorkflowState]], *, sticky_identity: str) -> RowChanges:
    """The row changes implied by ``steps`` (each event with the state right after it)."""
    changes = RowChanges()
    for event, state in steps:
        _derive_one(changes, event, state, sticky_identity)
        if not state.is_open:
            changes.close_run()
            return changes
    return changes


def _derive_one(changes: RowChanges, event: ev.Event, state: WorkflowState, sticky: str) -> None:
    a = event.attributes
    t = event.time
    if isinstance(a, ev.WorkflowStarted):
        if a.run_timeout is not None:
            # The run timeout counts from the end of the start delay (a retry's back-off), as
            # Temporal's; the execution timeout from the start request.
            delay = a.start_delay or timedelta(0)
            changes.add_timer(TimerRow(RUN_TIMEOUT, event.id, t + delay + a.run_timeout))
        if a.execution_timeout is not None:
            changes.add_timer(TimerRow(EXECUTION_TIMEOUT, event.id, t + a.execution_timeout))
        if state.awaiting_start_delay and a.start_delay is not None:
            changes.add_timer(TimerRow(START_DELAY, event.id, t + a.start_delay))
    elif isinstance(a, ev.WorkflowTaskScheduled):
        changes.add_task(TaskRow(WORKFLOW, a.task_queue, event.id, sticky))
    elif isinstance(a, ev.WorkflowTaskStarted):
        task = state.workflow_task
        timeout = task.timeout if task is not None else state.workflow_task_timeout
        changes.add_timer(TimerRow(WFT_TIMEOUT, event.id, t + timeout))
    elif isinstance(a, ev.WorkflowTaskCompleted | ev.WorkflowTaskTimedOut):
        changes.remove_timer(WFT_TIMEOUT, a.started_event_id)
    elif isinstance(a, ev.WorkflowTaskFailed):
        changes.remove_timer(WFT_TIMEOUT, a.started_event_id)
        if a.cause is not ev.WorkflowTaskFailedCause.UNHANDLED_EVENTS:
            delay = wft_retry_delay(state.workflow_task_failures)
            changes.add_timer(
                TimerRow(WFT_RETRY, a.scheduled_event_id, t + delay, state.workflow_task_failures)
            )
    elif isinstance(a, ev.ActivityScheduled):
        changes.add_activity(ActivityRow(event.id, t, codec.to_json(a).decode()))
        changes.add_task(TaskRow(ACTIVITY, a.task_queue, event.id))
        if a.schedule_to_start_timeout is not None:
            changes.add_timer(
                TimerRow(ACT_SCHEDULE_TO_START, event.id, t + a.schedule_to_start_timeout)
            )
        if a.schedule_to_close_timeout is not None:
            changes.add_timer(
                TimerRow(ACT_SCHEDULE_TO_CLOSE, event.id, t + a.schedule_to_close_timeout)
            )
    elif isinstance(
        a, ev.ActivityCompleted | ev.ActivityFailed | ev.ActivityTimedOut | ev.ActivityCanceled
    ):
        changes.remove_activity(a.scheduled_event_id)
    elif isinstance(a, ev.TimerStarted):
        changes.add_timer(TimerRow(USER_TIMER, event.id, t + a.duration))
    elif isinstance(a, ev.TimerFired | ev.TimerCanceled):
        changes.remove_timer(USER_TIMER, a.started_event_id)
