"""ResetWorkflow: rerun a workflow from a workflow-task boundary of its history.

A reset point is a ``WorkflowTaskCompleted`` event N. The new run's history is the old one up to
N *and the command-events of that task* (they are part of N's decision), with their original ids
and times; the engine then carries on as after any transition: activities, timers and child
starts still pending at that point get their rows again (timers and timeouts count from their
original events, so overdue ones fire at once), and a workflow task is scheduled when the code
has something to react to. Workers replay up to N and run today's code from there.

Everything is one transaction: the old run (if still open) is terminated with a reason that
names the new run (as a run that continued as new: its parent is not told, and the children
the new run keeps are left running; the others get their parent-close policy); children,
signals and cancels initiated before the reset point but resolved after it are carried out
again by the new run; the new run is created and becomes the workflow id's current run; its
execution row names the run it was reset from and the reset point (``describe`` shows the link
both ways, also for an old run that was already closed). The old run keeps its history. With
``reapply_signals``, the signals the old run received after the reset point are appended to the
new run (in order, at reset time).

``last_good_point`` picks the last ``WorkflowTaskCompleted`` before the first failure (a failed
or timed-out workflow task, or the task that failed the workflow).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from chronicle.history import codec
from chronicle.history import events as ev
from chronicle.history.fold import apply as fold_event
from chronicle.history.state import WorkflowState
from chronicle.server import errors, telemetry
from chronicle.server.engine import current_run, outbound, read, start, tasks
from chronicle.server.engine import transition as tr
from chronicle.server.engine.services import Services
from chronicle.server.store import pool as db
from chronicle.server.store import sql
from chronicle.server.store.pool import Conn
from chronicle.server.store.rows import RunKey

__all__ = ["ResetResult", "cut_point", "last_good_point", "reset"]

_CLOSE_COMMAND_EVENTS = (
    ev.WorkflowCompleted,
    ev.WorkflowFailed,
    ev.WorkflowCanceled,
    ev.WorkflowContinuedAsNew,
)


@dataclass(frozen=True, slots=True)
class ResetResult:
    """The new run and the reset point used."""

    run_id: str
    event_id: int


def _valid_ids(events: list[ev.Event]) -> str:
    ids = [str(e.id) for e in events if isinstance(e.attributes, ev.WorkflowTaskCompleted)]
    if not ids:
        return "none: no workflow task of this run completed"
    shown = ids if len(ids) <= 12 else [*ids[:5], "…", *ids[-5:]]
    return ", ".join(shown)


def last_good_point(events: list[ev.Event]) -> int:
    """The last ``WorkflowTaskCompleted`` before the first failure; ``InvalidArgument`` if the
    history has no failure or no completed task before it. Pure."""
    failure: int | None = None
    for event in events:
        a = event.attributes
        if isinstance(a, ev.WorkflowTaskFailed | ev.WorkflowTaskTimedOut):
            failure = a.scheduled_event_id
            break
        if isinstance(a, ev.WorkflowFailed):
            failure = a.workflow_task_completed_event_id or event.id
            break
    if failure is None:
        raise errors.InvalidArgument(
            "--to last-good: the run has no failure (no failed or timed-out workflow task, no "
            "WorkflowFailed); give --event-id",
            field="to_last_good",
        )
    good = [
        e.id
        for e in events
        if e.id < failure and isinstance(e.attributes, ev.WorkflowTaskCompleted)
    ]
    if not good:
        raise errors.InvalidArgument(
            f"--to last-good: no workflow task completed before the first failure (event "
            f"{failure}); nothing to keep, start the workflow again instead",
            field="to_last_good",
        )
    return good[-1]


def cut_point(events: list[ev.Event], event_id: int) -> int:
    """The id of the last event the new run keeps when resetting to ``event_id``: the
    ``WorkflowTaskCompleted`` itself and its command-events. ``InvalidArgument`` names what is
    wrong (no such event, not a workflow-task boundary, a task that closed the run). Pure."""
    if event_id < 1 or event_id > len(events):
        raise errors.InvalidArgument(
            f"event {event_id} does not exist: the run has events 1 to {len(events)}; reset "
            f"points are WorkflowTaskCompleted events ({_valid_ids(events)})",
            field="event_id",
        )
    target = events[event_id - 1]
    if not isinstance(target.attributes, ev.WorkflowTaskCompleted):
        raise errors.InvalidArgument(
            f"event {event_id} is a {target.type}, not a workflow-task boundary: reset points "
            f"are WorkflowTaskCompleted events ({_valid_ids(events)})",
            field="event_id",
        )
    last = event_id
    for event in events[event_id:]:
        # command-events name their task (0 in hand-written histories that leave it out)
        if getattr(event.attributes, "workflow_task_completed_event_id", None) not in (
            event_id,
            0,
        ):
            break
        if isinstance(event.attributes, _CLOSE_COMMAND_EVENTS):
            raise errors.InvalidArgument(
                f"the workflow task completed at event {event_id} closed the run ({event.type}, "
                f"event {event.id}); reset to an earlier WorkflowTaskCompleted "
                f"({_valid_ids(events[: event_id - 1])})",
                field="event_id",
            )
        last = event.id
    return last


def _plan(kept: list[ev.Event], signals: list[ev.SignalReceived], now: datetime) -> tr.Planned:
    """Fold the kept events (original ids and times), derive their rows, then plan what follows
    at ``now`` (reapplied signals, a workflow task) like any transition."""
    state = WorkflowState()
    steps: list[tuple[ev.Event, WorkflowState]] = []
    for event in kept:
        state = fold_event(state, event)
        steps.append((event, state))
    changes = tasks.derive(steps, sticky_identity="")
    tail = tr.plan(state, list(signals), now, sticky_identity="")
    changes.update(tail.changes)
    return tr.Planned([*kept, *tail.events], tail.state, changes)


async def _carry_out_unresolved(
    conn: Conn, key: RunKey, planned: tr.Planned, services: Services
) -> None:
    """Start the children, and send the signals and cancels, that the reset point's task (or
    an earlier one) initiated but the kept history does not resolve: in the old run they were
    carried out after the reset point, so the reset run does it again (``outbound.apply``,
    as after the completion that initiated them). A child the old run started after the reset
    point was closed by the reset, per its parent-close policy, unless that is ``abandon``:
    then it is still running and the new start fails (``ChildWorkflowStartFailed``)."""
    state = planned.state
    unresolved = {
        *(i for i, child in state.pending_children.items() if not child.run_id),
        *state.pending_externals,
    }
    events = [e for e in planned.events if e.id in unresolved]
    if not events:
        return
    outcome = tr.Outcome(decision=tr.Decision(), state=state, events=events, previous=state)
    await outbound.apply(conn, key, outcome, services.config)


async def reset(
    services: Services,
    namespace: str,
    workflow_id: str,
    run_id: str,
    *,
    event_id: int,
    to_last_good: bool,
    reapply_signals: bool,
    reason: str,
    identity: str,
    first_run_id: str = "",
) -> ResetResult:
    """Terminate the run (if open) and start its reset run, in one transaction.

    ``first_run_id``: only when the current run is of the chain that run started, checked
    under the current run's lock (a reset run stays in its chain: it copies event 1)."""
    if to_last_good == (event_id > 0):
        raise errors.InvalidArgument(
            "give exactly one of event_id (a WorkflowTaskCompleted event id) and to_last_good",
            field="event_id",
        )
    new_run_id = str(uuid.uuid4())

    async def body(conn: Conn) -> ResetResult:
        # The current run's execution row, then the current row (docs/decisions.md §15).
        current = await current_run.lock(conn, namespace, workflow_id)
        if current is None:
            raise read.not_found(workflow_id)
        key = RunKey(namespace, workflow_id, run_id or current.run_id)
        if key.run_id != current.run_id:
            raise errors.FailedPrecondition(
                f"run {key.run_id} is not the current run of workflow '{workflow_id}' "
                f"({current.run_id} is); reset the current run"
            )
        if first_run_id and current.first_run_id != first_run_id:
            raise read.not_in_chain(
                workflow_id, run_id, first_run_id, current.run_id, current.first_run_id
            )
        row = await conn.fetchrow(sql.LOCK_EXECUTION, *key.params())  # held already
        if row is None:
            raise read.not_found(workflow_id, run_id)
        state = codec.state_from_json(row["state"])  # locked: no event is appended meanwhile
        stored = await read.fetch_events(conn, key, 1, state.next_event_id)
        events = [e.decode() for e in stored]
        point = last_good_point(events) if to_last_good else event_id
        last = cut_point(events, point)
        signals = [
            e.attributes
            for e in events[last:]
            if reapply_signals and isinstance(e.attributes, ev.SignalReceived)
        ]
        now = tr.utcnow()
        why = reason or "reset"
        link = f"{why}: reset to event {point}, continued in run {new_run_id}"

        def terminate(ctx: tr.Context) -> tr.Decision:
            if not ctx.state.is_open:
                return tr.Decision()
            return tr.Decision(events=[ev.WorkflowTerminated(reason=link, identity=identity)])

        planned = _plan(events[:last], signals, now)
        kept = frozenset(i for i, c in planned.state.pending_children.items() if c.run_id)
        await tr.transition(
            conn, key, terminate, now=now, reset_into=tr.ResetInto(new_run_id, kept)
        )
        started = events[0].attributes
        assert isinstance(started, ev.WorkflowStarted)
        new_key = RunKey(namespace, workflow_id, new_run_id)
        await start.create_run(
            conn, new_key, started, [], now, replace_current=True, planned=planned
        )
        await conn.execute(sql.SET_RESET_FROM, *new_key.params(), key.run_id, point)
        await _carry_out_unresolved(conn, new_key, planned, services)
        return ResetResult(new_run_id, point)

    result = await db.in_transaction(services.pool, body)
    telemetry.logger(namespace=namespace, workflow_id=workflow_id).info(
        "workflow reset", event_id=result.event_id, new_run_id=result.run_id
    )
    return result
