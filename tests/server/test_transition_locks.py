"""The transition's locks when the execution and activity rows are locked in one statement.

``transition(..., activity_ids=[id])`` locks the execution row and the activity rows in one
round trip (``LOCK_EXECUTION_AND_ACTIVITIES``). These tests hold the execution row from another
connection and check what a waiting transition holds and what it then sees.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from chronicle.server import errors
from chronicle.server.engine import transition as tr
from chronicle.server.store.rows import ActivityInfo, RunKey
from tests.server.test_eager import _schedule


async def _wait_for_lock_wait(db: asyncpg.Connection, pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        waiting = await db.fetchval(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
        )
        if waiting:
            return
        assert time.monotonic() < deadline, "the transition never waited on the execution lock"
        await asyncio.sleep(0.01)


@pytest.fixture
async def started(stub: Any, db: asyncpg.Connection) -> tuple[RunKey, int]:
    """A run with one activity started eagerly: its key and the activity's id."""
    await _schedule(stub, "locks", ["act"])
    row = await db.fetchrow(
        "SELECT namespace, workflow_id, run_id, scheduled_event_id FROM activities"
    )
    assert row is not None
    assert row["workflow_id"] == "locks"
    return RunKey(row["namespace"], row["workflow_id"], row["run_id"]), row["scheduled_event_id"]


@pytest.fixture
async def holder(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A second connection, to hold the execution row."""
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def _lock_and_look(
    database_url: str, key: RunKey, sid: int
) -> tuple[asyncio.Task[dict[int, ActivityInfo]], asyncpg.Connection]:
    """Start a transition on ``sid`` in the background; it records the activities it saw."""
    conn = await asyncpg.connect(database_url)

    async def run() -> dict[int, ActivityInfo]:
        seen: dict[int, ActivityInfo] = {}

        def callback(ctx: tr.Context) -> tr.Decision:
            seen.update(ctx.activities)
            return tr.Decision()

        async with conn.transaction():
            await tr.transition(conn, key, callback, activity_ids=[sid])
        return seen

    return asyncio.create_task(run()), conn


async def test_waiting_transition_holds_no_activity_lock_and_sees_the_update(
    database_url: str, db: asyncpg.Connection, holder: asyncpg.Connection, started: Any
) -> None:
    key, sid = started
    attempt = await db.fetchval("SELECT attempt FROM activities WHERE scheduled_event_id = $1", sid)
    async with holder.transaction():
        await holder.execute(
            "SELECT 1 FROM executions WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3 "
            "FOR UPDATE",
            *key.params(),
        )
        task, conn = await _lock_and_look(database_url, key, sid)
        try:
            await _wait_for_lock_wait(db, conn.get_server_pid())
            # lock order execution → activities: the waiting transition holds no activity row
            async with db.transaction():
                await db.execute(
                    "SELECT 1 FROM activities WHERE scheduled_event_id = $1 FOR UPDATE NOWAIT", sid
                )
            await holder.execute(
                "UPDATE activities SET attempt = attempt + 1 WHERE scheduled_event_id = $1", sid
            )
        except BaseException:
            task.cancel()
            raise
    try:
        seen = await asyncio.wait_for(task, 10)
    finally:
        await conn.close()
    assert seen[sid].attempt == attempt + 1, "the transition read a stale activity row"


async def test_activity_deleted_while_waiting_is_not_seen(
    database_url: str, db: asyncpg.Connection, holder: asyncpg.Connection, started: Any
) -> None:
    key, sid = started
    async with holder.transaction():
        await holder.execute(
            "SELECT 1 FROM executions WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3 "
            "FOR UPDATE",
            *key.params(),
        )
        task, conn = await _lock_and_look(database_url, key, sid)
        try:
            await _wait_for_lock_wait(db, conn.get_server_pid())
            await holder.execute("DELETE FROM activities WHERE scheduled_event_id = $1", sid)
        except BaseException:
            task.cancel()
            raise
    try:
        seen = await asyncio.wait_for(task, 10)
    finally:
        await conn.close()
    assert seen == {}


async def test_static_activity_ids_on_a_missing_run_is_not_found(
    db: asyncpg.Connection, started: Any
) -> None:
    key, sid = started
    missing = RunKey(key.namespace, key.workflow_id, "no-such-run")
    with pytest.raises(errors.NotFound, match="no-such-run"):
        async with db.transaction():
            await tr.transition(db, missing, lambda ctx: tr.Decision(), activity_ids=[sid])
    seen: dict[int, ActivityInfo] = {}

    def callback(ctx: tr.Context) -> tr.Decision:
        seen.update(ctx.activities)
        return tr.Decision()

    async with db.transaction():
        await tr.transition(db, key, callback, activity_ids=[sid, sid + 1000])
    assert list(seen) == [sid], "one entry per existing activity row"
