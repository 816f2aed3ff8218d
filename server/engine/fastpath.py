"""The optimistic transition: read without a lock, then one guarded autocommit write.

``transition.transition`` costs four round trips (``BEGIN``, lock, write, ``COMMIT``).
``try_transition`` costs two: it reads the execution row (no lock, no explicit transaction),
runs the same pure ``decide`` step and writes with the transition statement guarded by the row
version it read (``xmin``). The statement is all-or-nothing and commits on its own (with the
usual WAL flush) before the caller answers. When the fast path does not apply, or the row
changed in between, or another transaction holds its lock (the write never waits for it: the
decision's ``now`` would be stale by the wait, and the holder usually changes the row anyway),
it returns None having written nothing, and the caller runs the locked path from scratch
(callbacks are pure, so rerunning them is fine). Why the guard is sufficient:
docs/fastpath.md. It relies on no row-only transition (one that leaves the execution row as it
is) writing the rows a fast write touches: the completed task's timeout timer, user timers, rows
keyed by new event ids. Keep it so when adding one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from chronicle.history import codec
from chronicle.history.state import WorkflowState
from chronicle.server import errors, telemetry
from chronicle.server.engine import transition as tr
from chronicle.server.engine.known_rows import KnownRows
from chronicle.server.store import sql
from chronicle.server.store.pool import RETRYABLE, Conn
from chronicle.server.store.rows import RunKey, failure_to_json

FALL_BACK: tuple[type[BaseException], ...] = (asyncpg.exceptions.UniqueViolationError, *RETRYABLE)
"""Errors of the guarded write after which the locked path runs (nothing was written)."""


async def try_transition(
    conn: Conn,
    key: RunKey,
    callback: tr.Callback,
    *,
    activity_ids: Callable[[WorkflowState], Sequence[int]] | None = None,
    start_workflow_task_for: tr.EagerStart | None = None,
    finish: Callable[[tr.Planned], Any] | None = None,
    eligible: Callable[[tr.Outcome], bool] | None = None,
    known: KnownRows | None = None,
) -> tr.Outcome | None:
    """``transition.transition`` without a lock, on ``conn`` outside any transaction.

    Returns the outcome once written and committed, or None (nothing written) when the caller
    must run the locked path: the run is not found or the callback rejects the request (the
    locked path decides, and raises, under the lock); the callback needs activity rows
    (``activity_ids`` of the state not empty) or updates some; the transition writes no event,
    or closes the run with effects beyond its own rows (a parent to tell, children to close,
    a continue-as-new: ``transition.close_is_local``); ``eligible(outcome)`` is False (the
    caller would do more I/O in the transaction); or the row changed since it was read.

    ``known``: the rows this server wrote last (``known_rows.py``). A run found there is not
    read; if its row changed since, the write does nothing and the attempt is made once more
    with a fresh read.
    """
    assert not conn.is_in_transaction(), "the fast path writes in autocommit"
    # Taken out: only a successful write puts the run back (a stale entry never lingers).
    cached = known.take(key) if known is not None else None
    if cached is not None:
        row: Any = cached.row
        state = cached.state
    else:
        row = await conn.fetchrow(sql.READ_EXECUTION, *key.params())
        if row is None:
            return None
        state = codec.state_from_json(row["state"])
    if not state.is_open or (activity_ids is not None and activity_ids(state)):
        return None
    try:
        step = tr.decide(
            key,
            row,
            state,
            {},
            callback,
            now=tr.utcnow(),
            start_for=start_workflow_task_for,
            finish=finish,
        )
    except errors.ServerError:
        return None
    outcome = step.outcome
    closes = not step.planned.state.is_open
    if (
        step.decision.activity_updates
        or not step.planned.events
        or (closes and not tr.close_is_local(row["has_parent"], state, step.planned.state))
        or (eligible is not None and not eligible(outcome))
    ):
        return None
    try:
        written = await write_guarded(conn, key, step, row["version"], skip_locked=True)
    except FALL_BACK as exc:
        _log_fallback(key, type(exc).__name__)
        written = None
    if written is None:
        if cached is not None:  # written elsewhere since this server wrote it: read it now
            return await try_transition(
                conn,
                key,
                callback,
                activity_ids=activity_ids,
                start_workflow_task_for=start_workflow_task_for,
                finish=finish,
                eligible=eligible,
                known=known,
            )
        _log_fallback(key, "execution row changed since it was read")
        return None
    if known is not None and written.version is not None and not closes:
        remember_written(known, key, step, written.version, has_parent=row["has_parent"])
    return outcome


async def write_guarded(
    conn: Conn, key: RunKey, step: tr.Step, version: int, *, skip_locked: bool = False
) -> tr.Written | None:
    """``step``'s write, guarded by the execution row version (``xmin``) it was decided on;
    None when nothing was written (``transition.write``)."""
    return await tr.write(
        conn,
        key,
        step.planned,
        sticky_identity=step.sticky,
        last_failure=step.failure,
        expected_version=version,
        skip_locked=skip_locked,
    )


def remember_written(
    known: KnownRows, key: RunKey, step: tr.Step, version: int, *, has_parent: bool
) -> None:
    """Put the execution row a guarded write of ``step`` left (its new ``xmin``: ``version``)
    into the known rows."""
    known.remember(
        key,
        version=version,
        state=step.planned.state,
        sticky_identity=step.sticky,
        last_workflow_task_failure=failure_to_json(step.failure),
        has_parent=has_parent,
    )


def _log_fallback(key: RunKey, reason: str) -> None:
    telemetry.run_logger(*key.params()).debug(
        "fast path fell back to the locked path", reason=reason
    )
