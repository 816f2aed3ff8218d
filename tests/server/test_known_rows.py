"""Known rows (``engine/known_rows.py``): the fast path takes the execution row it wrote last
from memory instead of reading it; a row changed elsewhere since is read again, never
overwritten."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import asyncpg

from chronicle.history import codec
from chronicle.history import events as ev
from chronicle.history.state import PendingActivity, PendingChild, RunStatus, WorkflowState
from chronicle.server.engine import fastpath
from chronicle.server.engine import transition as tr
from chronicle.server.engine.known_rows import KnownRows
from tests.server.test_fastpath import (
    _event_ids_and_types,
    _signal,
    _started,
    fast_conn,  # noqa: F401 -- the fixture
)


async def test_the_known_row_is_the_row_as_written(
    stub: Any,
    db: asyncpg.Connection,
    fast_conn: asyncpg.Connection,  # noqa: F811
) -> None:
    key, _ = await _started(stub, db, "known")
    known = KnownRows()
    first = await fastpath.try_transition(fast_conn, key, _signal("a"), known=known)
    assert first is not None
    entry = known.take(key)
    assert entry is not None
    row = await db.fetchrow(
        "SELECT xmin AS version, state FROM executions WHERE run_id = $1", key.run_id
    )
    assert entry.row["version"] == row["version"]
    assert entry.state == codec.state_from_json(row["state"]) == first.state
    known.remember(
        key,
        version=entry.row["version"],
        state=entry.state,
        sticky_identity=entry.row["sticky_identity"],
        last_workflow_task_failure=entry.row["last_workflow_task_failure"],
        has_parent=entry.row["has_parent"],
    )
    second = await fastpath.try_transition(fast_conn, key, _signal("b"), known=known)
    assert second is not None
    assert [e.id for e in second.events] == [first.events[-1].id + 1]
    assert len(known) == 1


async def test_a_row_changed_elsewhere_is_read_again_not_overwritten(
    stub: Any,
    db: asyncpg.Connection,
    fast_conn: asyncpg.Connection,  # noqa: F811
) -> None:
    """Another writer changes the row after this server wrote it, without an event (what
    UNSTICK_RUNS does): the write from the known row does nothing, and the fast path reads the
    row and writes on top of the other change instead of over it."""
    key, _ = await _started(stub, db, "stale")
    known = KnownRows()
    assert await fastpath.try_transition(fast_conn, key, _signal("a"), known=known) is not None
    await db.execute(
        "UPDATE executions SET sticky_identity = 'other' WHERE run_id = $1", key.run_id
    )
    outcome = await fastpath.try_transition(fast_conn, key, _signal("b"), known=known)
    assert outcome is not None
    sticky = await db.fetchval(
        "SELECT sticky_identity FROM executions WHERE run_id = $1", key.run_id
    )
    assert sticky == "other", "a write from the known row overwrote a change made elsewhere"
    types = await _event_ids_and_types(db, key)
    assert [i for i, _ in types] == list(range(1, len(types) + 1))
    assert [t for _, t in types[-2:]] == ["SignalReceived", "SignalReceived"]
    assert len(known) == 1  # the fresh write is known again


async def test_events_appended_elsewhere_are_read_again(
    stub: Any,
    db: asyncpg.Connection,
    fast_conn: asyncpg.Connection,  # noqa: F811
) -> None:
    key, _ = await _started(stub, db, "appended")
    known = KnownRows()
    assert await fastpath.try_transition(fast_conn, key, _signal("a"), known=known) is not None
    async with db.transaction():
        await tr.transition(db, key, _signal("elsewhere"))
    outcome = await fastpath.try_transition(fast_conn, key, _signal("b"), known=known)
    assert outcome is not None
    names = await db.fetch(
        "SELECT attributes->>'signal_name' AS n FROM history_events "
        "WHERE run_id = $1 AND event_type = 'SignalReceived' ORDER BY event_id",
        key.run_id,
    )
    assert [r["n"] for r in names] == ["a", "elsewhere", "b"]


def _terminate(ctx: tr.Context) -> tr.Decision:
    return tr.Decision(events=[ev.WorkflowTerminated(reason="test", identity="test")])


async def test_a_close_with_nothing_beyond_the_run_is_written_by_the_fast_path(
    stub: Any,
    db: asyncpg.Connection,
    fast_conn: asyncpg.Connection,  # noqa: F811
) -> None:
    key, _ = await _started(stub, db, "closing")
    known = KnownRows()
    outcome = await fastpath.try_transition(fast_conn, key, _terminate, known=known)
    assert outcome is not None
    assert outcome.state.status is RunStatus.TERMINATED
    assert await db.fetchval("SELECT status FROM executions WHERE run_id = $1", key.run_id) == (
        "terminated"
    )
    for table in ("tasks", "timers", "activities"):
        left = await db.fetchval(f"SELECT count(*) FROM {table} WHERE run_id = $1", key.run_id)
        assert left == 0, f"the close left {table} rows"
    assert len(known) == 0  # a closed run is not kept


def test_a_close_is_local_only_without_parent_children_activities_or_continue_as_new() -> None:
    running = WorkflowState(status=RunStatus.RUNNING)
    done = replace(running, status=RunStatus.COMPLETED)
    assert tr.close_is_local(False, running, done)
    assert not tr.close_is_local(True, running, done)  # the parent must be told
    assert not tr.close_is_local(
        False, running, replace(running, status=RunStatus.CONTINUED_AS_NEW)
    )
    retried = replace(running, status=RunStatus.FAILED, new_run_id="next-attempt")
    assert not tr.close_is_local(False, running, retried)  # its retry run is created in `after`
    activity = PendingActivity(
        scheduled_event_id=5, seq=1, activity_id="1", activity_type="a", task_queue="q"
    )
    assert not tr.close_is_local(False, replace(running, pending_activities={5: activity}), done)
    child = PendingChild(
        initiated_event_id=6, seq=2, workflow_id="c", workflow_type="t", run_id="r"
    )
    assert not tr.close_is_local(False, replace(running, pending_children={6: child}), done)
    abandoned = replace(child, parent_close_policy="abandon")
    assert tr.close_is_local(False, replace(running, pending_children={6: abandoned}), done)
