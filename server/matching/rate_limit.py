"""Per-task-queue activity rate limits, shared by every worker and server replica.

A worker that polls with ``max_activities_per_second = r`` sets the queue's limit (the latest
poll's value applies); a poll without a limit of its own obeys the queue's (``RateLimits``),
and no activity of a limited queue is started eagerly (``activity_task.start_eagerly``), so the
limit holds for every worker. Before leasing an activity task, the poll reserves the queue's
next slot in ``task_queue_rate_limits`` (one row per limited queue): slots are ``1 / r`` s
apart, so at most ``r`` activities per second start on the queue however many workers and
servers poll it. A poll that reserved a slot but found no task gives the slot back. Unlimited
queues cost nothing per poll: the namespace's limits are cached per server (``RateLimits``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from chronicle.server.engine import transition as tr
from chronicle.server.store import sql
from chronicle.server.store.pool import Pool

T = TypeVar("T")

_MAX_WAIT = 1.0
"""Longest sleep before re-trying a reservation (the limit may change meanwhile)."""


async def limited(
    pool: Pool,
    namespace: str,
    task_queue: str,
    rate: float,
    deadline: float,
    dispatch: Callable[[], Awaitable[T | None]],
) -> T | None:
    """``dispatch()`` once the queue's next slot is ours; None when ``deadline`` (loop time)
    passes first or ``dispatch`` finds no task (then the slot is released)."""
    loop = asyncio.get_running_loop()
    while True:
        now = tr.utcnow()
        row = await pool.fetchrow(sql.RESERVE_RATE_SLOT, namespace, task_queue, rate, now)
        assert row is not None
        if row["granted"]:
            break
        wait = (row["next_at"] - now).total_seconds()
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None
        await asyncio.sleep(max(0.001, min(wait, remaining, _MAX_WAIT)))
    result = await dispatch()
    if result is None:
        await pool.execute(sql.RELEASE_RATE_SLOT, namespace, task_queue, now)
    return result
