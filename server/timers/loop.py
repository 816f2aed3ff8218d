"""The timer loop: sleep until the earliest ``fire_at`` (or a NOTIFY about a sooner timer),
then fire every due timer, each in its own transaction.

Lock order matches every transition (execution row first, then the timer row), so firing a
timer never deadlocks with a transition that deletes it. A timer whose run vanished is just
deleted; one whose handler fails is postponed and logged, never lost. One that fails because
Postgres is unavailable is not postponed: the loop fires it as soon as Postgres answers.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from chronicle.server import errors, telemetry
from chronicle.server.engine import timeouts
from chronicle.server.engine import transition as tr
from chronicle.server.engine.services import Services
from chronicle.server.store import notify, sql
from chronicle.server.store import pool as db
from chronicle.server.store.notify import Waiter
from chronicle.server.store.pool import Conn
from chronicle.server.store.rows import RunKey

BATCH = 100
MAX_SLEEP = notify.TIMER_LOOP_MAX_SLEEP
CONCURRENCY = 8
POSTPONE = timedelta(seconds=10)


class TimerLoop:
    """Fires due timers until cancelled."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._log = telemetry.logger(component="timers")
        self._limit = asyncio.Semaphore(CONCURRENCY)
        self._waiter = Waiter()
        self._wake_at: float | None = None  # POSIX seconds the loop sleeps until (None: awake)
        services.notifier.listen_channel(notify.TIMER_CHANNEL, self._on_new_timer)

    def _on_new_timer(self, payload: str) -> None:
        try:
            fire_at = float(payload)
        except ValueError:
            self._waiter.set()
            return
        if self._wake_at is None or fire_at < self._wake_at:
            self._waiter.set()

    async def run(self) -> None:
        """Run forever (cancel to stop)."""
        pool = self._services.pool
        while True:
            self._wake_at = None
            self._waiter.clear()
            try:
                fired = await self.fire_due()
                if fired >= BATCH:
                    continue
                next_at = await pool.fetchval(sql.NEXT_TIMER)
            except Exception as exc:  # e.g. Postgres restarting: keep going, never die
                self._log.warning("timer loop error; retrying", error=repr(exc))
                await asyncio.sleep(1.0)
                continue
            now = tr.utcnow()
            delay = MAX_SLEEP if next_at is None else (next_at - now).total_seconds()
            delay = min(delay, MAX_SLEEP)
            if delay > 0:
                self._wake_at = now.timestamp() + delay
                await self._waiter.wait(delay)

    async def fire_due(self) -> int:
        """Fire the timers that are due now; returns how many were due."""
        due = await self._services.pool.fetch(sql.DUE_TIMERS, tr.utcnow(), BATCH)
        if not due:
            return 0
        async with asyncio.TaskGroup() as group:
            for row in due:
                group.create_task(self._fire_guarded(row))
        return len(due)

    async def _fire_guarded(self, row: Any) -> None:
        async with self._limit:
            key = RunKey(row["namespace"], row["workflow_id"], row["run_id"])
            try:
                await db.in_transaction(
                    self._services.pool, lambda conn: self._fire(conn, key, row["id"])
                )
            except Exception as exc:
                log = telemetry.run_logger(*key.params())
                cause = db.unavailable_cause(exc)
                if cause is not None:
                    # Postgres went away, not the timer: it is still due (or fired, if the
                    # commit went through), and the loop fires it once Postgres answers.
                    log.warning(
                        "timer not fired: the database is unavailable",
                        timer_id=row["id"],
                        error=str(cause) or type(cause).__name__,
                    )
                    return
                log.exception("timer failed; postponed", timer_id=row["id"])
                await self._services.pool.execute(
                    sql.POSTPONE_TIMER, row["id"], tr.utcnow() + POSTPONE
                )

    async def _fire(self, conn: Conn, key: RunKey, timer_id: int) -> None:
        await conn.execute(sql.LOCK_EXECUTION, *key.params())
        timer = await conn.fetchrow(sql.TAKE_TIMER, timer_id)
        if timer is None:
            return  # fired by another replica, or made moot meanwhile
        try:
            await timeouts.fire(conn, key, timer["kind"], timer["ref_id"], timer["attempt"])
        except errors.NotFound:
            return  # the run is gone; the timer row is deleted with this transaction
