"""The optimistic fast path (``engine/fastpath.py``): an unlocked read, then one guarded write.

A second connection (``holder``) changes the execution row between the fast path's read and its
write; the write must then apply nothing and the caller fall back to the locked path.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from chronicle.history import codec, commands
from chronicle.history import events as ev
from chronicle.protos.v1 import service_pb2 as pb
from chronicle.server.engine import fastpath
from chronicle.server.engine import transition as tr
from chronicle.server.store.rows import RunKey
from tests.server.conftest import command_protos, payload_proto, start_request

SIGNALS = 20


@pytest.fixture
async def holder(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A second connection, to change the execution row while the fast path runs."""
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def _started(stub: Any, db: asyncpg.Connection, workflow_id: str) -> tuple[RunKey, Any]:
    """A run whose first workflow task is started: its key and the task."""
    await stub.StartWorkflow(start_request(workflow_id))
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity="w1"), timeout=10
    )
    assert task.task_token
    row = await db.fetchrow(
        "SELECT namespace, workflow_id, run_id FROM executions WHERE workflow_id = $1", workflow_id
    )
    assert row is not None
    return RunKey(row["namespace"], row["workflow_id"], row["run_id"]), task


async def _wait_for_lock_wait(db: asyncpg.Connection, application_name: str) -> None:
    """Until a backend of ``application_name`` waits on a lock."""
    deadline = time.monotonic() + 10
    while not await db.fetchval(
        "SELECT count(*) > 0 FROM pg_stat_activity "
        "WHERE application_name = $1 AND wait_event_type = 'Lock'",
        application_name,
    ):
        assert time.monotonic() < deadline, "the write never waited on the execution row"
        await asyncio.sleep(0.01)


def _signal(name: str) -> tr.Callback:
    def callback(ctx: tr.Context) -> tr.Decision:
        return tr.Decision(events=[ev.SignalReceived(signal_name=name, identity="test")])

    return callback


async def _event_ids_and_types(db: asyncpg.Connection, key: RunKey) -> list[tuple[int, str]]:
    rows = await db.fetch(
        "SELECT event_id, event_type FROM history_events "
        "WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3 ORDER BY event_id",
        *key.params(),
    )
    return [(r["event_id"], r["event_type"]) for r in rows]


@pytest.fixture
async def fast_conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection for the fast path (autocommit: no transaction is opened on it)."""
    conn = await asyncpg.connect(database_url, server_settings={"application_name": "fast"})
    try:
        yield conn
    finally:
        await conn.close()


async def test_fast_path_writes_and_commits(
    stub: Any, db: asyncpg.Connection, fast_conn: asyncpg.Connection
) -> None:
    key, _ = await _started(stub, db, "fast")
    before = await _event_ids_and_types(db, key)
    outcome = await fastpath.try_transition(fast_conn, key, _signal("s"))
    assert outcome is not None
    [event] = outcome.events
    assert event.id == len(before) + 1
    assert await _event_ids_and_types(db, key) == [*before, (event.id, "SignalReceived")]
    row = await db.fetchrow(
        "SELECT next_event_id, state FROM executions WHERE run_id = $1", key.run_id
    )
    assert row["next_event_id"] == event.id + 1
    assert codec.state_from_json(row["state"]) == outcome.state


async def _race(
    db: asyncpg.Connection,
    holder: asyncpg.Connection,
    fast_conn: asyncpg.Connection,
    key: RunKey,
    change: Any,
) -> tr.Outcome | None:
    """Run the fast path while ``holder`` holds the execution row, having changed it with
    ``change(holder)`` but not committed yet. The guarded write must neither wait for the lock
    (it would wait here for ever: the holder commits only after it) nor write anything."""
    async with holder.transaction():
        await holder.execute(
            "SELECT 1 FROM executions WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3 "
            "FOR UPDATE",
            *key.params(),
        )
        await change(holder)
        return await asyncio.wait_for(fastpath.try_transition(fast_conn, key, _signal("fast")), 5)


async def test_row_changed_without_events_writes_nothing(
    stub: Any, db: asyncpg.Connection, holder: asyncpg.Connection, fast_conn: asyncpg.Connection
) -> None:
    key, _ = await _started(stub, db, "unstick")
    before = await _event_ids_and_types(db, key)

    async def unstick(conn: asyncpg.Connection) -> None:  # what UNSTICK_RUNS does
        await conn.execute(
            "UPDATE executions SET sticky_identity = 'other' WHERE run_id = $1", key.run_id
        )

    assert await _race(db, holder, fast_conn, key, unstick) is None
    assert await _event_ids_and_types(db, key) == before
    sticky = await db.fetchval(
        "SELECT sticky_identity FROM executions WHERE run_id = $1", key.run_id
    )
    assert sticky == "other", "the guarded write overwrote a concurrent change"


async def test_concurrent_append_writes_nothing(
    stub: Any, db: asyncpg.Connection, holder: asyncpg.Connection, fast_conn: asyncpg.Connection
) -> None:
    key, _ = await _started(stub, db, "append")
    before = await _event_ids_and_types(db, key)

    async def append(conn: asyncpg.Connection) -> None:
        await tr.transition(conn, key, _signal("holder"))

    assert await _race(db, holder, fast_conn, key, append) is None
    after = await _event_ids_and_types(db, key)
    assert after == [*before, (len(before) + 1, "SignalReceived")]
    notified = await db.fetchval(
        "SELECT attributes->>'signal_name' FROM history_events WHERE run_id = $1 AND event_id = $2",
        key.run_id,
        len(after),
    )
    assert notified == "holder"


async def test_completion_falls_back_when_the_run_changes(
    stub: Any, db: asyncpg.Connection, holder: asyncpg.Connection
) -> None:
    """A signal being recorded (its transaction holds the run) when the completion comes: the
    guarded write does not wait, the completion reruns on the locked path, which waits for the
    signal's commit, and both are recorded once."""
    key, task = await _started(stub, db, "fallback")
    async with holder.transaction():
        await holder.execute("SELECT 1 FROM executions WHERE run_id = $1 FOR UPDATE", key.run_id)
        await tr.transition(holder, key, _signal("holder"))
        completion = asyncio.ensure_future(
            stub.CompleteWorkflowTask(
                pb.CompleteWorkflowTaskRequest(
                    task_token=task.task_token,
                    identity="w1",
                    commands=command_protos(
                        commands.StartTimer(seq=1, duration=timedelta(seconds=60))
                    ),
                ),
                timeout=10,
            )
        )
        try:
            await _wait_for_lock_wait(db, "chronicle-server")
        except BaseException:
            completion.cancel()
            raise
    await completion
    assert await _event_ids_and_types(db, key) == [
        (1, "WorkflowStarted"),
        (2, "WorkflowTaskScheduled"),
        (3, "WorkflowTaskStarted"),
        (4, "SignalReceived"),
        (5, "WorkflowTaskCompleted"),
        (6, "TimerStarted"),
        (7, "WorkflowTaskScheduled"),
    ]
    assert (
        await db.fetchval(
            "SELECT count(*) FROM timers WHERE run_id = $1 AND kind = 'user_timer'", key.run_id
        )
        == 1
    )


async def _signaller(stub: Any, workflow_id: str) -> None:
    for i in range(SIGNALS):
        await stub.SignalWorkflow(
            pb.SignalWorkflowRequest(
                workflow_id=workflow_id, signal_name="s", input=[payload_proto(i)]
            )
        )
        if i % 4 == 0:
            await asyncio.sleep(0.005)


async def _completer(stub: Any, workflow_id: str) -> None:
    """Complete workflow tasks (eagerly re-granted when possible) until every signal was seen."""
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity="w1"), timeout=10
    )
    while True:
        assert task.task_token
        history = await stub.GetWorkflowHistory(
            pb.GetWorkflowHistoryRequest(workflow_id=workflow_id)
        )
        started = task.events[-1]  # the task's WorkflowTaskStarted: what it "saw" ends there
        assert started.event_type == "WorkflowTaskStarted"
        seen = sum(
            e.event_type == "SignalReceived" and e.event_id < started.event_id
            for e in history.events
        )
        done = seen == SIGNALS
        response = await stub.CompleteWorkflowTask(
            pb.CompleteWorkflowTaskRequest(
                task_token=task.task_token,
                identity="w1",
                commands=command_protos(commands.CompleteWorkflow()) if done else [],
                eager_workflow_task=True,
            ),
            timeout=10,
        )
        if done:
            return
        task = response.workflow_task
        if not task.task_token:
            task = await stub.PollWorkflowTask(
                pb.PollWorkflowTaskRequest(task_queue="q", identity="w1"), timeout=10
            )


async def test_signals_racing_completions_are_recorded_once(
    stub: Any, db: asyncpg.Connection
) -> None:
    await stub.StartWorkflow(start_request("race"))
    await asyncio.wait_for(asyncio.gather(_signaller(stub, "race"), _completer(stub, "race")), 60)
    result = await stub.GetWorkflowResult(
        pb.GetWorkflowResultRequest(workflow_id="race"), timeout=10
    )
    assert (result.closed, result.status) == (True, "completed")
    rows = await db.fetch(
        "SELECT event_id, event_type, attributes FROM history_events WHERE workflow_id = 'race' "
        "ORDER BY event_id"
    )
    assert [r["event_id"] for r in rows] == list(range(1, len(rows) + 1))
    signals = [
        json.dumps(json.loads(r["attributes"])["input"], sort_keys=True)
        for r in rows
        if r["event_type"] == "SignalReceived"
    ]
    assert len(signals) == len(set(signals)) == SIGNALS
    types = [r["event_type"] for r in rows]
    assert types[-1] == "WorkflowCompleted"
    scheduled = types.count("WorkflowTaskScheduled")
    assert scheduled == types.count("WorkflowTaskStarted")


async def _transition_plans(conn: asyncpg.Connection) -> list[tuple[int, int]]:
    """``(generic, custom)`` plans of each transition statement variant this connection ran."""
    rows = await conn.fetch(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
        "WHERE statement LIKE '%upd_exec AS%' AND statement NOT LIKE '%pg_prepared%'"
    )
    return [(row["generic_plans"], row["custom_plans"]) for row in rows]


async def test_apply_transition_keeps_its_generic_plan(
    stub: Any, db: asyncpg.Connection, holder: asyncpg.Connection, fast_conn: asyncpg.Connection
) -> None:
    """Guarded (fast) and unguarded (locked) calls share one prepared statement per variant
    (``sql.transition_statement``) and run from its cached generic plan once Postgres has tried
    its five custom plans (docs/fastpath.md). Every signal after the first writes the same parts,
    so one variant runs 11 times. On a small test database this checks the mechanism; W3-scale
    figures are in transition-sql.md."""
    key, _ = await _started(stub, db, "plans")
    for i in range(12):
        assert await fastpath.try_transition(fast_conn, key, _signal(f"fast{i}")) is not None
        async with holder.transaction():
            await tr.transition(holder, key, _signal(f"locked{i}"))
    for conn in (fast_conn, holder):
        plans = await _transition_plans(conn)
        assert sum(generic + custom for generic, custom in plans) == 12, plans
        assert all(custom <= 5 for _, custom in plans), plans
        assert max(generic for generic, _ in plans) >= 11 - 5, plans
