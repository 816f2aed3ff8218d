"""The one state-transition helper: every change to a run goes through ``transition``.

In the caller's transaction: lock the execution row → decode the state snapshot → run a pure
callback that returns new event attributes (+ row changes) → number and fold the events → the
generic rule (a workflow task is scheduled when the run has unseen events and no task is out
and none is backing off) → derive task/timer/activity rows (``tasks.derive``) → one write
statement (history, execution, current execution, rows, ``pg_notify``). A callback that raises
(stale caller, bad command) leaves nothing written.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from chronicle.history import codec
from chronicle.history import events as ev
from chronicle.history.fold import apply as fold_event
from chronicle.history.state import RunStatus, WorkflowState
from chronicle.history.values import Failure
from chronicle.server import errors
from chronicle.server.engine import tasks
from chronicle.server.store import notify, sql
from chronicle.server.store.pool import Conn
from chronicle.server.store.rows import ActivityInfo, RunKey, failure_from_json, failure_to_json

KEEP: Final = "keep"
"""Decision value meaning "leave this execution column as it is"."""


def utcnow() -> datetime:
    """The server clock (aware UTC); every event time and timer comes from it."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """What a transition callback may look at: the locked run as it is now."""

    key: RunKey
    state: WorkflowState
    now: datetime
    sticky_identity: str
    last_workflow_task_failure: Failure | None
    activities: dict[int, ActivityInfo]


@dataclass(slots=True, kw_only=True)
class Decision:
    """What a transition callback returns: new events and the changes beside them."""

    events: list[ev.EventAttributes] = field(default_factory=list)
    changes: tasks.RowChanges = field(default_factory=tasks.RowChanges)
    activity_updates: list[ActivityInfo] = field(default_factory=list)
    sticky_identity: str | Literal["keep"] = KEEP
    last_workflow_task_failure: Failure | Literal["keep"] | None = KEEP
    result: Any = None


@dataclass(frozen=True, slots=True)
class Planned:
    """The outcome of ``plan``: numbered events, the new state and the row changes."""

    events: list[ev.Event]
    state: WorkflowState
    changes: tasks.RowChanges
    events_json: tuple[str, ...] = field(init=False)
    """Each event's attributes as JSON, encoded once for the write and the task grant."""

    def __post_init__(self) -> None:
        encoded = tuple(codec.to_json(e.attributes).decode() for e in self.events)
        object.__setattr__(self, "events_json", encoded)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What ``transition`` returns: the callback's decision, the new state, the new events."""

    decision: Decision
    state: WorkflowState
    events: list[ev.Event]
    previous: WorkflowState
    extra: Any = None
    """What the ``finish`` hook of ``transition`` returned (eager dispatch grants)."""
    events_json: tuple[str, ...] = ()
    """``Planned.events_json`` of ``events``."""


@dataclass(frozen=True, slots=True)
class EagerStart:
    """A call that may start the run's next workflow task for worker ``identity``: a
    completion asking for it (eager workflow task: when due and the run is sticky to the
    worker), or a poll waiting on this server (sync match, ``plan``'s ``hand_to``). Its
    ``WorkflowTaskStarted`` records ``request_id``, the call's, so that a worker that never got
    the answer can release that one task (``lost_answers.py``)."""

    identity: str
    request_id: str = ""


def plan(
    state: WorkflowState,
    new: Sequence[ev.EventAttributes],
    now: datetime,
    *,
    sticky_identity: str,
    start_for: EagerStart | None = None,
    hand_to: EagerStart | None = None,
) -> Planned:
    """Number and fold ``new`` onto ``state``, apply the generic rule and derive the rows. Pure.

    ``start_for``: when the generic rule schedules a workflow task and the run is sticky to that
    worker identity, the task is started for it at once (eager workflow task): no task row.
    ``hand_to``: the same for a waiting poll (its identity and request id), sticky or not
    (sync match of a new run's first task, ``matching/handoff.py``).
    """
    eager = 0
    steps: list[tuple[ev.Event, WorkflowState]] = []
    for attributes in new:
        event = ev.Event(id=state.next_event_id, time=now, attributes=attributes)
        state = fold_event(state, event)
        steps.append((event, state))
    if state.needs_workflow_task and state.workflow_task_failures == 0:
        event = ev.Event(
            id=state.next_event_id,
            time=now,
            attributes=ev.WorkflowTaskScheduled(
                task_queue=state.task_queue, start_to_close_timeout=state.workflow_task_timeout
            ),
        )
        state = fold_event(state, event)
        steps.append((event, state))
        starter = hand_to if hand_to is not None and hand_to.identity else None
        if starter is None and start_for is not None and start_for.identity == sticky_identity:
            starter = start_for
        if starter is not None:
            eager = event.id
            started = ev.Event(
                id=state.next_event_id,
                time=now,
                attributes=ev.WorkflowTaskStarted(
                    scheduled_event_id=eager,
                    identity=starter.identity,
                    request_id=starter.request_id,
                ),
            )
            state = fold_event(state, started)
            steps.append((started, state))
    changes = tasks.derive(steps, sticky_identity=sticky_identity)
    if eager:
        changes.remove_task(tasks.WORKFLOW, eager)
    return Planned([event for event, _ in steps], state, changes)


async def write(
    conn: Conn,
    key: RunKey,
    planned: Planned,
    *,
    sticky_identity: str,
    last_failure: Failure | None,
    write_execution: bool = True,
    expected_version: int | None = None,
    new_run: NewRun | None = None,
    skip_locked: bool = False,
) -> Written | None:
    """Write a planned transition in one statement (in the caller's transaction), made of
    the parts it needs (``sql.transition_statement``).

    ``expected_version``: the fast path (``fastpath.py``) holds no lock and passes the ``xmin``
    of the execution row it read; then nothing is written, and None returned, unless that row
    version is still the current one; with ``skip_locked`` also when another transaction holds
    the row's lock (nothing is written rather than waiting for it). ``new_run``: ``planned``
    is a new run's first transition; its current-execution and execution rows are inserted
    with it, unless the workflow id already has a current run: then nothing is written and
    None returned.
    """
    events, state, changes = planned.events, planned.state, planned.changes
    # The announcement to watchers is read from the execution row the write updates.
    assert write_execution or not events, "events are written with their execution row"
    notes: dict[tuple[str, str], None] = {}
    if events and not state.is_open:
        notes[(notify.RUN_CHANNEL, notify.closed_key(*key.params()))] = None
    for row in changes.insert_tasks.values():
        channel_key = notify.task_key(row.kind, key.namespace, row.task_queue)
        notes[(notify.TASK_CHANNEL, channel_key)] = None
    if changes.insert_timers:
        earliest = min(t.fire_at for t in changes.insert_timers.values())
        if notify.timer_needs_notify(earliest, utcnow()):  # later ones are found unannounced
            notes[(notify.TIMER_CHANNEL, notify.timer_payload(earliest))] = None
    tasks_in = list(changes.insert_tasks.values())
    timers_in = list(changes.insert_timers.values())
    acts_in = list(changes.insert_activities.values())
    # delete_all removes every row of the run: the listed deletes would find the same rows
    delete_tasks = [] if changes.delete_all else list(changes.delete_tasks)
    delete_timers = [] if changes.delete_all else list(changes.delete_timers)
    delete_activities = [] if changes.delete_all else list(changes.delete_activities)
    needed = {
        "events": events,
        "close_current": not state.is_open,  # an open run's current row already says running
        "delete_all": changes.delete_all,
        "delete_tasks": delete_tasks,
        "insert_tasks": tasks_in,
        "delete_timers": delete_timers,
        "insert_timers": timers_in,
        "delete_activities": delete_activities,
        "insert_activities": acts_in,
    }
    parts = frozenset(name for name, rows in needed.items() if rows)
    assert not skip_locked or expected_version is not None, "skip_locked needs the guard"
    # New events are announced to the run's watchers, if any (sql.WATCH_RUN); a new run has none.
    announce = bool(events) and new_run is None
    statement, picks = sql.transition_statement(
        parts,
        bool(notes),
        create=new_run is not None,
        skip_locked=skip_locked,
        announce=announce,
    )
    arguments = (
        *key.params(),
        [e.id for e in events],
        [e.type for e in events],
        [e.time for e in events],
        list(planned.events_json),
        state.next_event_id,
        state.status.value,
        codec.state_to_json(state).decode(),
        state.close_time,
        sticky_identity,
        failure_to_json(last_failure),
        write_execution,
        notify.run_key(*key.params()) if announce else None,
        [k for k, _ in delete_tasks],
        [s for _, s in delete_tasks],
        [r.kind for r in tasks_in],
        [r.task_queue for r in tasks_in],
        [r.scheduled_event_id for r in tasks_in],
        [r.sticky_identity for r in tasks_in],
        [k for k, _ in delete_timers],
        [r for _, r in delete_timers],
        [t.kind for t in timers_in],
        [t.ref_id for t in timers_in],
        [t.attempt for t in timers_in],
        [t.fire_at for t in timers_in],
        delete_activities,
        [a.scheduled_event_id for a in acts_in],
        [a.scheduled_time for a in acts_in],
        [a.attributes_json for a in acts_in],
        [c for c, _ in notes],
        [p for _, p in notes],
        [a.started_by for a in acts_in],
        expected_version,
        *(new_run.arguments() if new_run is not None else (None,) * 5),
        [a.request_id for a in acts_in],
    )
    result = await conn.fetchrow(statement, *[arguments[i] for i in picks])
    assert result is not None
    if not result["applied"]:
        return None
    return Written(result["version"])


@dataclass(frozen=True, slots=True)
class NewRun:
    """What a new run's first write inserts beside its state (``write(new_run=...)``; the
    arguments ``$36``..``$40`` of ``sql.transition_statement(create=True)``, in this order)."""

    workflow_type: str
    task_queue: str
    start_time: datetime
    memo_json: str
    request_id: str

    def arguments(self) -> tuple[Any, ...]:
        """The values of ``$36``..``$40``."""
        return (
            self.workflow_type,
            self.task_queue,
            self.start_time,
            self.memo_json,
            self.request_id,
        )


@dataclass(frozen=True, slots=True)
class Written:
    """What ``write`` wrote: ``version`` is the execution row's new ``xmin`` (None when the
    transition left the row as it was)."""

    version: int | None


Callback = Callable[[Context], Decision]
"""A pure transition callback; raises ``ServerError`` to reject the request."""


async def transition(
    conn: Conn,
    key: RunKey,
    callback: Callback,
    *,
    activity_ids: Sequence[int] | Callable[[WorkflowState], Sequence[int]] = (),
    now: datetime | None = None,
    start_workflow_task_for: EagerStart | None = None,
    finish: Callable[[Planned], Any] | None = None,
    reset_into: ResetInto | None = None,
) -> Outcome:
    """Apply ``callback`` to the run ``key`` in the caller's transaction.

    ``activity_ids`` (or a function of the state giving them) selects ``activities`` rows to lock
    and hand to the callback. ``NotFound`` when the run does not exist.
    ``start_workflow_task_for`` is ``plan``'s ``start_for``. ``finish`` may still change the rows
    of an open run before they are written (eager activity dispatch); its result is
    ``Outcome.extra``. ``reset_into``: the transition closes the run for its reset
    (``_after_close``).
    """
    row, state, activities = await _lock(conn, key, activity_ids)
    step = decide(
        key,
        row,
        state,
        activities,
        callback,
        now=now or utcnow(),
        start_for=start_workflow_task_for,
        finish=finish,
    )
    for info in step.decision.activity_updates:
        await conn.execute(sql.UPDATE_ACTIVITY, *info.update_params(key))
    if step.changed or not step.planned.changes.empty:
        await write(
            conn,
            key,
            step.planned,
            sticky_identity=step.sticky,
            last_failure=step.failure,
            write_execution=step.changed,
        )
    if state.is_open and not step.planned.state.is_open:
        await _after_close(conn, key, row, state, step.planned.state, step.now, reset_into)
    return step.outcome


@dataclass(frozen=True, slots=True)
class ResetInto:
    """A run closed for its reset: the reset run ``run_id`` carries the workflow on, with the
    children (by initiated event id) it keeps, those started before the reset point."""

    run_id: str
    kept_children: frozenset[int]


@dataclass(frozen=True, slots=True)
class Step:
    """A decided transition, not yet written (``decide``)."""

    decision: Decision
    planned: Planned
    previous: WorkflowState
    now: datetime
    sticky: str
    failure: Failure | None
    changed: bool
    """The execution row changes (events, sticky identity or last workflow-task failure)."""
    extra: Any

    @property
    def outcome(self) -> Outcome:
        """What ``transition`` returns for this step."""
        planned = self.planned
        return Outcome(
            self.decision,
            planned.state,
            planned.events,
            self.previous,
            self.extra,
            planned.events_json,
        )


def decide(
    key: RunKey,
    row: Any,
    state: WorkflowState,
    activities: dict[int, ActivityInfo],
    callback: Callback,
    *,
    now: datetime,
    start_for: EagerStart | None = None,
    finish: Callable[[Planned], Any] | None = None,
) -> Step:
    """Run ``callback`` on the run as read (``row``: its execution columns), plan, ``finish``.

    Pure (no I/O): shared by ``transition`` and the unlocked fast path (``fastpath.py``).
    """
    context = Context(
        key=key,
        state=state,
        now=now,
        sticky_identity=row["sticky_identity"],
        last_workflow_task_failure=failure_from_json(row["last_workflow_task_failure"]),
        activities=activities,
    )
    decision = callback(context)
    sticky = (
        context.sticky_identity
        if decision.sticky_identity == KEEP
        else str(decision.sticky_identity)
    )
    failure = (
        context.last_workflow_task_failure
        if decision.last_workflow_task_failure == KEEP
        else decision.last_workflow_task_failure
    )
    planned = plan(state, decision.events, now, sticky_identity=sticky, start_for=start_for)
    extra = None
    if planned.state.is_open:
        planned.changes.update(decision.changes)
        if finish is not None:
            extra = finish(planned)
    changed = (
        bool(planned.events)
        or sticky != context.sticky_identity
        or (failure != context.last_workflow_task_failure)
    )
    last_failure = failure if isinstance(failure, Failure) else None
    return Step(decision, planned, state, now, sticky, last_failure, changed, extra)


async def _lock(
    conn: Conn,
    key: RunKey,
    activity_ids: Sequence[int] | Callable[[WorkflowState], Sequence[int]],
) -> tuple[Any, WorkflowState, dict[int, ActivityInfo]]:
    """Lock the execution row, then the selected ``activities`` rows; decode both.

    A static list of ids is locked in the same round trip as the execution
    (``LOCK_EXECUTION_AND_ACTIVITIES``); ids that depend on the state need a second one.
    """
    activities: dict[int, ActivityInfo] = {}
    if callable(activity_ids) or not activity_ids:
        row = await conn.fetchrow(sql.LOCK_EXECUTION, *key.params())
        if row is None:
            raise errors.NotFound(f"workflow '{key.workflow_id}' run '{key.run_id}' not found")
        state = codec.state_from_json(row["state"])
        ids = activity_ids(state) if callable(activity_ids) else ()
        if ids:
            for act in await conn.fetch(sql.LOCK_ACTIVITIES, *key.params(), list(ids)):
                info = ActivityInfo.from_record(act)
                activities[info.scheduled_event_id] = info
        return row, state, activities
    found = await conn.fetch(sql.LOCK_EXECUTION_AND_ACTIVITIES, *key.params(), list(activity_ids))
    if not found:
        raise errors.NotFound(f"workflow '{key.workflow_id}' run '{key.run_id}' not found")
    for act in found:
        if act["a_scheduled_event_id"] is not None:
            info = ActivityInfo.from_record(act, prefix="a_")
            activities[info.scheduled_event_id] = info
    return found[0], codec.state_from_json(found[0]["state"]), activities


class _ContinuedAsNew(Exception):
    """The run a ``transition_latest`` callback was about to see continued as new (or, with
    no new run id, closed otherwise: maybe for its reset)."""

    def __init__(self, new_run_id: str) -> None:
        super().__init__(new_run_id)
        self.new_run_id = new_run_id


async def transition_latest(
    conn: Conn,
    key: RunKey,
    callback: Callback,
    *,
    now: datetime | None = None,
    visit: Callable[[RunKey], Awaitable[bool]] | None = None,
) -> Outcome | None:
    """``transition`` on the run that carries ``key``'s workflow on: ``key`` itself, or, if it
    continued as new (or was reset), its new run (its reset run), and so on. Each run is
    checked under its own lock, so a continue-as-new or reset that commits while this waits
    for the lock is followed too (a run named a moment ago may be closed by then).
    ``callback`` sees the first run that goes on no further, open or closed. ``visit(key)``,
    if given, runs first for each run tried, in the caller's transaction; False stops there
    (None is returned)."""

    closed_for_good: set[str] = set()  # closed runs known to have no reset run

    def guarded(ctx: Context) -> Decision:
        if ctx.state.new_run_id:  # continued as new, or failed and retried
            raise _ContinuedAsNew(ctx.state.new_run_id)
        if not ctx.state.is_open and ctx.key.run_id not in closed_for_good:
            raise _ContinuedAsNew("")  # maybe reset: look for its reset run
        return callback(ctx)

    while True:
        if visit is not None and not await visit(key):
            return None
        try:
            return await transition(conn, key, guarded, now=now)
        except _ContinuedAsNew as moved:
            new_run_id = moved.new_run_id or await conn.fetchval(sql.RESET_SUCCESSOR, *key.params())
            if new_run_id is None:
                closed_for_good.add(key.run_id)  # the callback sees it closed, next time round
            else:
                key = RunKey(key.namespace, key.workflow_id, new_run_id)


def close_is_local(has_parent: bool, before: WorkflowState, after: WorkflowState) -> bool:
    """Whether closing ``before`` into ``after`` may be written by the fast path (``fastpath.py``):
    ``_after_close`` has nothing to do (no parent to tell, no child to close), the run does not
    go on in a new run (continue-as-new, or a retry of a failed run), and it has no pending
    activity. Row-only transitions (heartbeats, retries,
    dispatches) write activity rows, their timers and tasks without a new execution row version;
    the close deletes every row of the run from its statement's snapshot and would miss one
    they inserted meanwhile (docs/fastpath.md)."""
    return (
        not has_parent
        and after.status is not RunStatus.CONTINUED_AS_NEW
        and not after.new_run_id  # a failed run retried in a new run goes on, too
        and not before.pending_activities
        and not any(
            child.run_id and child.parent_close_policy in ("terminate", "request_cancel")
            for child in before.pending_children.values()
        )
    )


async def _after_close(
    conn: Conn,
    key: RunKey,
    row: Any,
    before: WorkflowState,
    after: WorkflowState,
    now: datetime,
    reset_into: ResetInto | None = None,
) -> None:
    """Report a child's close to its parent and apply this run's parent-close policies.

    The parent learns through a timer row on its own run (due now), so a child never locks its
    parent; children are closed here, under this run's lock (always parent → child order).
    A run closed for its reset (``reset_into``) goes on in its reset run, as one that continued
    as new goes on in its new run: its parent is not told, and the children the reset run
    keeps are left to it.
    """
    # continued as new or retried (a new run id), or reset
    continues = (
        after.status is RunStatus.CONTINUED_AS_NEW
        or bool(after.new_run_id)
        or reset_into is not None
    )
    if row["parent_workflow_id"] is not None and not continues:
        await conn.execute(
            sql.INSERT_FOREIGN_TIMER,
            tasks.CHILD_CLOSED,
            row["parent_namespace"],
            row["parent_workflow_id"],
            row["parent_run_id"],
            row["parent_initiated_event_id"],
            now,
            notify.timer_payload(now),
        )
    for child in before.pending_children.values():
        policy = child.parent_close_policy
        if not child.run_id or policy not in ("terminate", "request_cancel"):
            continue
        if reset_into is not None and child.initiated_event_id in reset_into.kept_children:
            continue
        reason = f"parent workflow '{key.workflow_id}' closed ({after.status.value})"
        # The child's own chain of runs, from the run it started as: not whatever run holds
        # its workflow id now (the id may be reused once the child closed).
        child_key = RunKey(key.namespace, child.workflow_id, child.run_id)
        await transition_latest(conn, child_key, _close_child(policy, reason), now=now)


def _close_child(policy: str, reason: str) -> Callback:
    def callback(ctx: Context) -> Decision:
        if not ctx.state.is_open or (policy == "request_cancel" and ctx.state.cancel_requested):
            return Decision()
        if policy == "terminate":
            return Decision(events=[ev.WorkflowTerminated(reason=reason)])
        return Decision(events=[ev.WorkflowCancelRequested(reason=reason)])

    return callback
