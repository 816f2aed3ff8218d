"""Known rows (``engine/known_rows.py``): the fast path takes the execution row it wrote last
from memory instead of reading it; a row changed elsewhere since is read again, never
overwritten."""

from __future__ import annotations

from typing import Any

import asyncpg

from chronicle.history import codec
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
