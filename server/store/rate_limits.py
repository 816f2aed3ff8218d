"""The task queues' activity rate limits, as one server process sees them (cached briefly).

Deciding whether a queue is rate-limited happens on the hot path (every workflow-task
completion that asks for eager starts, every activity poll without a limit of its own), so the
namespace's limits are read once and kept ``ttl`` seconds. A limit set through this server is
seen at once (``invalidate``); one set through another replica within ``ttl``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from chronicle.server.store import sql
from chronicle.server.store.pool import Pool


class RateLimits:
    """Per-namespace cache of ``task_queue_rate_limits``: task queue → activities per second."""

    def __init__(self, pool: Pool, ttl: float = 1.0) -> None:
        self._pool = pool
        self._ttl = ttl
        self._cached: dict[str, tuple[float, Mapping[str, float], frozenset[str]]] = {}

    async def rates(self, namespace: str) -> Mapping[str, float]:
        """The namespace's limited queues and their rates (at most ``ttl`` seconds old)."""
        return (await self._entry(namespace))[1]

    async def limited_queues(self, namespace: str) -> frozenset[str]:
        """The namespace's rate-limited task queues (at most ``ttl`` seconds old)."""
        return (await self._entry(namespace))[2]

    async def _entry(self, namespace: str) -> tuple[float, Mapping[str, float], frozenset[str]]:
        now = time.monotonic()
        cached = self._cached.get(namespace)
        if cached is not None and now - cached[0] < self._ttl:
            return cached
        rows = await self._pool.fetch(sql.RATE_LIMITED_QUEUES, namespace)
        rates = {row["task_queue"]: float(row["rate"]) for row in rows}
        entry = (now, rates, frozenset(rates))
        self._cached[namespace] = entry
        return entry

    def invalidate(self, namespace: str) -> None:
        """Forget the namespace's limits (a limit was just set through this server)."""
        self._cached.pop(namespace, None)
