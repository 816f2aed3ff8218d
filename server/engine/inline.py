"""Inline activities: results of activities the worker ran before their schedule was recorded.

A worker completing a workflow task may already have run (some of) the activities the task's
commands schedule on the workflow's own task queue (``sdk/_inline.py``). In the completion's
transaction, a finished one is recorded as ``ActivityScheduled`` followed by
``ActivityCompleted`` (attempt 1) after the command events, so the next workflow task is due at
once; one still running is recorded as scheduled and *started* by the completing worker
(attempt 1, start-to-close timer from now), and reports later with a token naming it by
activity id (``tokens.ActivityTaskToken``). See docs/inline-activities.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from chronicle.history import commands as cmd
from chronicle.history import events as ev
from chronicle.history.state import WorkflowState
from chronicle.history.values import Payload
from chronicle.server import errors
from chronicle.server.engine import activity_task
from chronicle.server.engine import transition as tr


def validate(
    commands: Sequence[cmd.Command],
    results: Mapping[str, Payload | None],
    started: Sequence[str],
    *,
    closes: bool,
) -> None:
    """``InvalidArgument`` unless every inline activity is scheduled (and not cancelled) by
    ``commands``, once."""
    if not results and not started:
        return
    if closes:
        raise errors.InvalidArgument(
            "inline activities cannot accompany a command that closes the workflow",
            field="inline_results",
        )
    cancelled = {c.seq for c in commands if isinstance(c, cmd.RequestCancelActivity)}
    scheduled = Counter(
        c.activity_id or str(c.seq)
        for c in commands
        if isinstance(c, cmd.ScheduleActivity) and c.seq not in cancelled
    )
    seen: set[str] = set()
    for activity_id in [*results, *started]:
        if activity_id not in scheduled:
            raise errors.InvalidArgument(
                f"inline activity {activity_id!r} is not scheduled by this task's commands",
                field="inline_results",
            )
        if scheduled[activity_id] > 1:
            raise errors.InvalidArgument(
                f"inline activity {activity_id!r}: this task schedules two activities with that id",
                field="inline_results",
            )
        if activity_id in seen:
            raise errors.InvalidArgument(
                f"inline activity {activity_id!r} is listed twice", field="inline_results"
            )
        seen.add(activity_id)


def check_fresh(state: WorkflowState, activity_ids: Sequence[str]) -> None:
    """``InvalidArgument`` when an inline activity's id is already taken by a pending activity
    of the run (its inline token, which names it by id, would be ambiguous)."""
    wanted = set(activity_ids)
    for pending in state.pending_activities.values():
        if pending.activity_id in wanted:
            raise errors.InvalidArgument(
                f"inline activity {pending.activity_id!r}: an activity with that id is already "
                "pending",
                field="inline_results",
            )


def completed_events(
    state: WorkflowState,
    new: Sequence[ev.EventAttributes],
    results: Mapping[str, Payload | None],
    *,
    identity: str,
) -> list[ev.EventAttributes]:
    """``ActivityCompleted`` for each inline result, after ``new`` (numbered from
    ``state.next_event_id``); ``InvalidArgument`` for one not on the workflow's task queue."""
    completed: list[ev.EventAttributes] = []
    for offset, attributes in enumerate(new):
        if not isinstance(attributes, ev.ActivityScheduled):
            continue
        if attributes.activity_id not in results:
            continue
        _check_queue(state, attributes)
        completed.append(
            ev.ActivityCompleted(
                scheduled_event_id=state.next_event_id + offset,
                result=results[attributes.activity_id],
                attempt=1,
                identity=identity,
            )
        )
    return completed


def mark_started(planned: tr.Planned, started: Sequence[str], *, identity: str) -> None:
    """Record the still-running inline activities as started by ``identity``. Pure."""
    if not started:
        return
    wanted = set(started)
    for event in planned.events:
        a = event.attributes
        if isinstance(a, ev.ActivityScheduled) and a.activity_id in wanted:
            _check_queue(planned.state, a)
            activity_task.mark_started(planned.changes, event, identity)


def _check_queue(state: WorkflowState, scheduled: ev.ActivityScheduled) -> None:
    if scheduled.task_queue != state.task_queue:
        raise errors.InvalidArgument(
            f"inline activity {scheduled.activity_id!r} is scheduled on task queue "
            f"{scheduled.task_queue!r}, not the workflow's own ({state.task_queue!r})",
            field="inline_results",
        )
