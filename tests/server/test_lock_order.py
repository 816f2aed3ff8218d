"""Lock order between a run's execution row and its workflow id's current-execution row.

A close (terminate, completion, continue-as-new) locks the run's ``executions`` row, then
updates the id's ``current_executions`` row. Everything else that needs both must take them in
that order (docs/decisions.md §15), or the two deadlock: Postgres breaks the cycle after
``deadlock_timeout`` (a second) and the server reruns the victim, so the symptom is a stall,
not an error. Each test forces the interleaving that deadlocked before the rule held: a test
connection holds the first lock of both sides, both sides queue behind it, then it lets go.
The proof is Postgres's own count (``pg_stat_database.deadlocks``), read once the server has
stopped (a backend flushes its counters when it exits).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
import pytest

from chronicle.history import commands
from chronicle.protos.v1 import service_pb2 as pb
from chronicle.protos.v1 import service_pb2_grpc
from chronicle.server.app import Server
from chronicle.server.engine import current_run
from chronicle.server.store.pool import StaleRead
from tests.server.conftest import payload, running_server, start_request
from tests.server.test_children import _complete, _poll


@dataclass
class Race:
    """A server, a stub to it and two direct connections: ``holder`` holds locks, ``watcher``
    observes."""

    server: Server
    stub: Any
    holder: asyncpg.Connection
    watcher: asyncpg.Connection
    deadlocks_before: int

    async def deadlocks(self) -> int:
        """Deadlocks Postgres detected in this database since the race began. Stops the server
        first and waits for its connections to end: a backend's counters reach
        ``pg_stat_database`` at the latest when it exits."""
        await self.server.stop(grace=1.0)
        for _ in range(1000):
            left = await self.watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'chronicle-server'"
            )
            if left == 0:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the server's connections did not end")
        return await _deadlock_count(self.watcher) - self.deadlocks_before

    async def lock_waiters(self, count: int) -> None:
        """Until ``count`` backends of this database wait on a lock."""
        for _ in range(1000):
            waiting = await self.watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if waiting >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"expected {count} backends waiting on a lock")

    async def behind(
        self,
        lock_sql: str,
        lock_args: tuple[Any, ...],
        first: Callable[[], Awaitable[Any]],
        second: Callable[[], Awaitable[Any]],
    ) -> tuple[Any, Any]:
        """Hold ``lock_sql`` on ``holder``, start ``first()`` and let it queue for the lock,
        then ``second()``, then let go; their results (or exceptions). Callables: a gRPC
        call starts when it is made."""
        held = self.holder.transaction()
        await held.start()
        try:
            await self.holder.execute(lock_sql, *lock_args)
            one = asyncio.ensure_future(first())
            await self.lock_waiters(1)
            two = asyncio.ensure_future(second())
            await self.lock_waiters(2)
        finally:
            await held.rollback()
        results = await asyncio.wait_for(
            asyncio.gather(one, two, return_exceptions=True), timeout=30
        )
        return results[0], results[1]

    async def run_of(self, workflow_id: str) -> str:
        """The current run of ``workflow_id``."""
        run_id = await self.watcher.fetchval(
            "SELECT run_id FROM current_executions WHERE workflow_id = $1", workflow_id
        )
        assert run_id is not None
        return str(run_id)

    async def status(self, workflow_id: str, run_id: str) -> str:
        """The status of one run."""
        return str(
            await self.watcher.fetchval(
                "SELECT status FROM executions WHERE workflow_id = $1 AND run_id = $2",
                workflow_id,
                run_id,
            )
        )


async def _deadlock_count(conn: asyncpg.Connection) -> int:
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    count = await conn.fetchval(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    )
    return int(count or 0)


@pytest.fixture
async def race(database_url: str) -> AsyncIterator[Race]:
    """A running server on a fresh database, with the database's deadlock count so far."""
    watcher = await asyncpg.connect(database_url)
    holder = await asyncpg.connect(database_url)
    try:
        async with running_server(database_url) as server:
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
            try:
                stub = service_pb2_grpc.WorkflowServiceStub(channel)
                yield Race(server, stub, holder, watcher, await _deadlock_count(watcher))
            finally:
                await channel.close()
    finally:
        await holder.close()
        await watcher.close()


_HOLD_RUN = "SELECT 1 FROM executions WHERE workflow_id = $1 AND run_id = $2 FOR UPDATE"
_HOLD_CURRENT = "SELECT 1 FROM current_executions WHERE workflow_id = $1 FOR UPDATE"


def _terminate(race: Race, workflow_id: str) -> Callable[[], Awaitable[Any]]:
    return lambda: race.stub.TerminateWorkflow(
        pb.TerminateWorkflowRequest(workflow_id=workflow_id, reason="stop")
    )


def _ok(result: Any) -> Any:
    if isinstance(result, BaseException):
        raise result
    return result


async def _started(race: Race, workflow_id: str) -> str:
    await race.stub.StartWorkflow(start_request(workflow_id))
    return await race.run_of(workflow_id)


async def test_a_terminate_policy_start_racing_a_terminate_does_not_deadlock(race: Race) -> None:
    """The close locks the run, then the current row; the start with terminate_existing used
    to lock the current row, then the run."""
    run = await _started(race, "lo-term")
    closed, started = await race.behind(
        _HOLD_RUN,
        ("lo-term", run),
        _terminate(race, "lo-term"),
        lambda: race.stub.StartWorkflow(
            start_request("lo-term", id_conflict_policy="terminate_existing")
        ),
    )
    assert await race.deadlocks() == 0
    _ok(closed)
    new_run = _ok(started).run_id
    assert new_run != run
    assert await race.status("lo-term", run) == "terminated"
    assert await race.status("lo-term", new_run) == "running"


async def test_a_signal_with_start_on_the_running_run_racing_a_terminate_does_not_deadlock(
    race: Race,
) -> None:
    """use_existing with a signal used to lock the current row, then the run (to signal it)."""
    run = await _started(race, "lo-sws")
    closed, started = await race.behind(
        _HOLD_RUN,
        ("lo-sws", run),
        _terminate(race, "lo-sws"),
        lambda: race.stub.StartWorkflow(
            start_request(
                "lo-sws",
                id_conflict_policy="use_existing",
                signal_name="go",
                signal_input=[],
            )
        ),
    )
    assert await race.deadlocks() == 0
    _ok(closed)
    new_run = _ok(started).run_id
    # the run it found was closed by then: the signal starts a new one
    assert new_run != run
    assert await race.status("lo-sws", new_run) == "running"


async def test_a_reset_racing_a_terminate_does_not_deadlock(race: Race) -> None:
    """A reset used to lock the current row, then the run it resets."""
    run = await _started(race, "lo-reset")
    await _complete(
        race.stub,
        await _poll(race.stub, "q"),
        commands.StartTimer(seq=1, duration=timedelta(hours=1)),
    )
    closed, reset = await race.behind(
        _HOLD_RUN,
        ("lo-reset", run),
        _terminate(race, "lo-reset"),
        lambda: race.stub.ResetWorkflow(
            pb.ResetWorkflowRequest(workflow_id="lo-reset", event_id=4, reason="again")
        ),
    )
    assert await race.deadlocks() == 0
    _ok(closed)
    new_run = _ok(reset).run_id
    assert await race.status("lo-reset", run) == "terminated"
    assert await race.status("lo-reset", new_run) == "running"


async def test_a_continue_as_new_racing_a_terminate_policy_start_does_not_deadlock(
    race: Race,
) -> None:
    """The continue-as-new commits first and moves the current row on to its new run; the
    start, which locked the old run, then sees that and starts over on the new one."""
    run = await _started(race, "lo-can")
    task = await _poll(race.stub, "q")
    continued, started = await race.behind(
        _HOLD_RUN,
        ("lo-can", run),
        lambda: _complete(race.stub, task, commands.ContinueAsNew(input=(payload(1),))),
        lambda: race.stub.StartWorkflow(
            start_request("lo-can", id_conflict_policy="terminate_existing")
        ),
    )
    assert await race.deadlocks() == 0
    _ok(continued)
    newest = _ok(started).run_id
    statuses = await race.watcher.fetch(
        "SELECT run_id, status FROM executions WHERE workflow_id = 'lo-can' ORDER BY start_time"
    )
    assert [r["status"] for r in statuses] == ["continued_as_new", "terminated", "running"]
    assert statuses[-1]["run_id"] == newest


async def test_a_fast_path_close_racing_a_terminate_policy_start_does_not_deadlock(
    race: Race,
) -> None:
    """The workflow completes on the fast path (one statement: the run's row, then the current
    row) while a start with terminate_existing waits for the current row."""
    run = await _started(race, "lo-fast")
    task = await _poll(race.stub, "q")
    started, completed = await race.behind(
        _HOLD_CURRENT,
        ("lo-fast",),
        lambda: race.stub.StartWorkflow(
            start_request("lo-fast", id_conflict_policy="terminate_existing")
        ),
        lambda: _complete(race.stub, task, commands.CompleteWorkflow(result=payload("done"))),
    )
    assert await race.deadlocks() == 0
    new_run = _ok(started).run_id
    assert new_run != run
    old_status = await race.status("lo-fast", run)
    if isinstance(completed, BaseException):
        # the start terminated the run first: the completion is refused, not an error
        assert isinstance(completed, grpc.aio.AioRpcError), completed
        assert completed.code() == grpc.StatusCode.NOT_FOUND, completed
        assert old_status == "terminated"
    else:
        assert old_status == "completed"
    assert await race.status("lo-fast", new_run) == "running"


async def test_a_child_start_and_signal_of_one_id_racing_its_close_does_not_deadlock(
    race: Race,
) -> None:
    """A workflow task that starts a child with a workflow id and then signals that id used to
    hold the id's current row (child start) while it waited for its run (signal)."""
    target = await _started(race, "lo-target")
    await race.stub.StartWorkflow(start_request("lo-parent", task_queue="pq"))
    task = await _poll(race.stub, "pq")
    closed, completed = await race.behind(
        _HOLD_RUN,
        ("lo-target", target),
        _terminate(race, "lo-target"),
        lambda: _complete(
            race.stub,
            task,
            commands.StartChildWorkflow(
                seq=1, workflow_id="lo-target", workflow_type="cwf", task_queue="cq"
            ),
            commands.SignalExternalWorkflow(seq=2, workflow_id="lo-target", signal_name="go"),
        ),
    )
    assert await race.deadlocks() == 0
    _ok(closed)
    _ok(completed)
    history = await race.watcher.fetch(
        "SELECT event_type FROM history_events WHERE workflow_id = 'lo-parent' ORDER BY event_id"
    )
    types = [r["event_type"] for r in history]
    assert "ChildWorkflowStarted" in types
    assert "ExternalSignalResolved" in types
    assert await race.status("lo-target", target) == "terminated"


async def _lock_in_background(
    database_url: str, workflow_id: str
) -> tuple[asyncio.Task[current_run.Current | None], asyncpg.Connection]:
    """``current_run.lock`` of ``workflow_id`` in a transaction of its own connection, held
    until the task ends."""
    conn = await asyncpg.connect(database_url)

    async def run() -> current_run.Current | None:
        async with conn.transaction():
            return await current_run.lock(conn, "default", workflow_id)

    return asyncio.create_task(run()), conn


async def _nowait(conn: asyncpg.Connection, statement: str, *args: Any) -> bool:
    """Whether ``statement`` (a ``FOR UPDATE NOWAIT``) got its lock at once."""
    try:
        async with conn.transaction():
            await conn.execute(statement, *args)
    except asyncpg.exceptions.LockNotAvailableError:
        return False
    return True


async def test_the_current_row_is_locked_only_after_its_run(race: Race, database_url: str) -> None:
    """Waiting for the current row, ``current_run.lock`` already holds the run's row; waiting
    for the run's row, it holds no current row."""
    run = await _started(race, "lo-order")
    run_nowait = _HOLD_RUN + " NOWAIT"
    current_nowait = _HOLD_CURRENT + " NOWAIT"
    for held, other, other_args, other_held in (
        ((_HOLD_CURRENT, ("lo-order",)), run_nowait, ("lo-order", run), True),
        ((_HOLD_RUN, ("lo-order", run)), current_nowait, ("lo-order",), False),
    ):
        async with race.holder.transaction():
            await race.holder.execute(held[0], *held[1])
            task, conn = await _lock_in_background(database_url, "lo-order")
            try:
                await race.lock_waiters(1)
                got_other = await _nowait(race.watcher, other, *other_args)
                assert got_other is not other_held, (held[0], other)
            except BaseException:
                task.cancel()
                raise
        try:
            current = await asyncio.wait_for(task, 10)
        finally:
            await conn.close()
        assert current is not None
        assert (current.run_id, current.status) == (run, "running")


async def test_a_current_run_that_keeps_moving_aborts_the_call(
    race: Race, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``StaleRead`` reruns the transaction; when every attempt finds the current run moved,
    the call is answered ABORTED (retry it), not INTERNAL."""
    await _started(race, "lo-moving")
    attempts: list[int] = []

    async def moved(*args: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        raise StaleRead("the current run of workflow 'lo-moving' changed")

    monkeypatch.setattr(current_run, "lock", moved)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await race.stub.StartWorkflow(start_request("lo-moving", id_conflict_policy="use_existing"))
    assert len(attempts) > 1
    assert raised.value.code() == grpc.StatusCode.ABORTED
    assert "retry the call" in (raised.value.details() or "")


async def test_many_starts_replacing_one_id_at_once_all_succeed(race: Race) -> None:
    """Starts with terminate_existing of one id, queued behind its run at once: each that
    commits moves the current row on, so every other one finds it moved (``StaleRead``) and
    runs again. Those reruns are progress, not failures: every start succeeds, one after the
    other, as when they queued on the current row (before §15), however many there are."""
    run = await _started(race, "lo-many")
    count = 10
    async with race.holder.transaction():
        await race.holder.execute(_HOLD_RUN, "lo-many", run)
        calls = [
            asyncio.ensure_future(
                race.stub.StartWorkflow(
                    start_request("lo-many", id_conflict_policy="terminate_existing")
                )
            )
            for _ in range(count)
        ]
        await race.lock_waiters(count)
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 60)
    failed = [r for r in results if isinstance(r, BaseException)]
    assert not failed, failed
    assert len({r.run_id for r in results}) == count
    statuses = await race.watcher.fetch(
        "SELECT status FROM executions WHERE workflow_id = 'lo-many'"
    )
    assert sorted(r["status"] for r in statuses) == ["running"] + ["terminated"] * count
    assert await race.deadlocks() == 0


async def test_a_current_run_that_names_the_same_move_again_still_aborts(
    race: Race, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rerun is free only for a move the call has not seen: one that names the same new
    run again proves no progress, so the reruns stay bounded (no spin) and the call ends
    ABORTED."""
    await _started(race, "lo-same")
    attempts: list[int] = []

    async def moved(*args: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        raise StaleRead("the current run of workflow 'lo-same' changed", moved_to="same")

    monkeypatch.setattr(current_run, "lock", moved)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await race.stub.StartWorkflow(start_request("lo-same", id_conflict_policy="use_existing"))
    assert raised.value.code() == grpc.StatusCode.ABORTED
    assert 1 < len(attempts) <= 7
