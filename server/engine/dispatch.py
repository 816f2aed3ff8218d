"""Dispatching a queued workflow task to a poll: started for the poller, events granted.

Two paths, one outcome (``WorkflowTaskStarted`` appended, the task row gone, the grant):

- **alone** (``config.fast_path``): read the queue's oldest eligible tasks (up to
  ``CANDIDATES``) joined with their execution rows, without locks. For each in turn: decide,
  read the events the grant needs, then one autocommit statement, guarded by the row's
  ``xmin`` (docs/fastpath.md), appends the event and deletes the task row. The statement
  never waits for a row lock: a run changed since the read (another server dispatched the
  task, a signal arrived) or held by another transaction writes nothing, and the next
  candidate is tried. Nothing can fail after the commit: the grant is built from memory.
  Dispatches of one queue on this server take turns (``Services.dispatch_locks``), so its own
  pollers do not race for the same row.
- **locked**: ``BEGIN``, lease the row (``FOR UPDATE SKIP LOCKED``), lock the run, write,
  read the events, ``COMMIT``. Used when the alone path cannot decide by itself: a stale
  task row (it deletes it), a run it cannot read, or every candidate lost.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from chronicle.history import codec
from chronicle.history import events as ev
from chronicle.server import errors
from chronicle.server.engine import fastpath, grants
from chronicle.server.engine import tasks as task_rows
from chronicle.server.engine import transition as tr
from chronicle.server.engine.services import Services
from chronicle.server.store import pool as db
from chronicle.server.store import sql
from chronicle.server.store.pool import Conn
from chronicle.server.store.rows import RunKey

CANDIDATES: Final = 3
"""Task rows one alone dispatch tries, oldest first, before the locked path takes over (the
``LIMIT`` of ``sql.PEEK_WORKFLOW_TASKS``; each one lost means another dispatch or write got
to its run first, or holds it)."""


class _Stale(Exception):
    """The task row no longer matches the run (internal control flow)."""


class _Locked(Exception):
    """The alone path hands over to the locked path (internal control flow)."""


async def dispatch(
    services: Services, namespace: str, task_queue: str, identity: str, request_id: str = ""
) -> grants.WorkflowTaskGrant | None:
    """Start the queue's next workflow task for ``identity``; None when the queue is empty.

    Its ``WorkflowTaskStarted`` records ``request_id``, the poll's, so that a worker that lost
    the poll's answer can release the task (``lost_answers.py``, docs/decisions.md §8)."""
    limited = await services.rate_limits.limited_queues(namespace)
    if services.config.fast_path:
        try:
            return await _dispatch_alone(
                services, namespace, task_queue, identity, limited, request_id
            )
        except _Locked:
            pass
    return await _dispatch_locked(services, namespace, task_queue, identity, limited, request_id)


async def _dispatch_alone(
    services: Services,
    namespace: str,
    task_queue: str,
    identity: str,
    limited: frozenset[str],
    request_id: str = "",
) -> grants.WorkflowTaskGrant | None:
    poll = tr.EagerStart(identity, request_id)
    lock = services.dispatch_locks.get((namespace, task_queue))
    if lock is None:
        lock = services.dispatch_locks[(namespace, task_queue)] = asyncio.Lock()
    granted = None
    # Exits in reverse: the connection goes back (a cancelled write has ended), then the turn,
    # then a task started for nobody is timed out (grants.unclaimed).
    async with (
        grants.unclaimed(services, "dispatch") as started,
        lock,  # the turn first: waiting for it holds no connection
        services.pool.acquire() as conn,
    ):
        candidates = await conn.fetch(
            sql.PEEK_WORKFLOW_TASKS,
            namespace,
            task_queue,
            task_rows.WORKFLOW,
            identity,
            services.config.sticky_timeout,
        )
        if not candidates:
            return None
        for row in candidates:
            if row["version"] is None:
                raise _Locked  # a task row of a run that is not there: the locked path drops it
            granted = await _start_guarded(services, conn, namespace, row, poll, limited, started)
            if granted is not None:
                break
    if granted is None:
        raise _Locked
    return granted


async def _start_guarded(
    services: Services,
    conn: Conn,
    namespace: str,
    row: Any,
    poll: tr.EagerStart,
    limited: frozenset[str],
    started: list[grants.StartedTask],
) -> grants.WorkflowTaskGrant | None:
    """One guarded write starting the task in ``row``: its grant, or None when nothing was
    written (the run changed since ``row`` was read, or another transaction holds it). The
    task is in ``started`` (``grants.unclaimed``) from before the write, and taken out when
    the write is known not to have applied."""
    key = RunKey(namespace, row["workflow_id"], row["run_id"])
    scheduled = row["scheduled_event_id"]
    state = codec.state_from_json(row["state"])
    try:
        step = tr.decide(key, row, state, {}, _start_callback(scheduled, poll), now=tr.utcnow())
    except (_Stale, errors.ServerError):
        raise _Locked from None
    step.planned.changes.remove_task(task_rows.WORKFLOW, scheduled)
    outcome = step.outcome
    after = _granted_after(outcome, poll.identity)
    # Read before the write, so that nothing can fail after its commit (stored events do not
    # change; a lost guard wastes this read).
    older = await grants.older_events(conn, key, after, outcome.previous.next_event_id)
    started.append(grants.StartedTask.among(key, step.planned.events))
    try:
        written = await fastpath.write_guarded(conn, key, step, row["version"], skip_locked=True)
    except fastpath.FALL_BACK:
        started.clear()  # the statement failed: nothing was written
        raise _Locked from None
    if written is None:
        started.clear()
        return None
    if written.version is not None:
        fastpath.remember_written(
            services.known_rows, key, step, written.version, has_parent=row["has_parent"]
        )
    return grants.assemble(key, outcome, after=after, older=older, rate_limited_queues=limited)


async def _dispatch_locked(
    services: Services,
    namespace: str,
    task_queue: str,
    identity: str,
    limited: frozenset[str],
    request_id: str = "",
) -> grants.WorkflowTaskGrant | None:
    poll = tr.EagerStart(identity, request_id)
    sticky_timeout = services.config.sticky_timeout

    async with grants.unclaimed(services, "dispatch") as started:

        async def body(conn: Conn) -> grants.WorkflowTaskGrant | None:
            started.clear()  # an attempt run again after a rollback starts afresh
            while True:
                row = await conn.fetchrow(
                    sql.LEASE_TASK,
                    *(namespace, task_queue, task_rows.WORKFLOW, identity, sticky_timeout),
                )
                if row is None:
                    return None
                key = RunKey(namespace, row["workflow_id"], row["run_id"])
                try:
                    outcome = await tr.transition(
                        conn, key, _start_callback(row["scheduled_event_id"], poll)
                    )
                except (_Stale, errors.NotFound):
                    continue  # the row is deleted with this transaction: it was stale
                started.append(grants.StartedTask.among(key, outcome.events))
                return await grants.grant(
                    conn,
                    key,
                    outcome,
                    after=_granted_after(outcome, identity),
                    rate_limited_queues=limited,
                )

        return await db.in_transaction(services.pool, body)


def _granted_after(outcome: tr.Outcome, identity: str) -> int:
    """The events the poller gets start after this one: its last processed workflow task when
    the run is sticky to it (it may hold the run in its cache), else 0 (the whole history)."""
    sticky = bool(identity) and outcome.decision.result == identity
    return outcome.previous.last_completed_started_event_id if sticky else 0


def _start_callback(scheduled_event_id: int, poll: tr.EagerStart) -> tr.Callback:
    def callback(ctx: tr.Context) -> tr.Decision:
        task = ctx.state.workflow_task
        if (
            not ctx.state.is_open
            or task is None
            or task.started_event_id
            or task.scheduled_event_id != scheduled_event_id
        ):
            raise _Stale
        return tr.Decision(
            events=[
                ev.WorkflowTaskStarted(
                    scheduled_event_id=scheduled_event_id,
                    identity=poll.identity,
                    request_id=poll.request_id,
                )
            ],
            result=ctx.sticky_identity,
        )

    return callback
