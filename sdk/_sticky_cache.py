"""The sticky cache: an LRU map ``run_id → WorkflowInstance``, and eviction.

A run's next workflow task continues its cached instance when it comes to the same worker;
``busy`` holds the runs whose task (or query) is being handled, so that a second task of the
run arriving meanwhile replays into its own instance instead of sharing one. Instances are
closed in the worker's thread pool (``close`` runs workflow code: cancellation handlers).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from concurrent.futures import Executor
from typing import Any

from chronicle.sdk._instance import WorkflowInstance

__all__ = ["StickyCache"]


class StickyCache:
    """Cached instances by run id, least recently used first (see the module docstring)."""

    def __init__(self, max_cached: int, executor: Executor, close_timeout: float, log: Any) -> None:
        self._instances: OrderedDict[str, WorkflowInstance] = OrderedDict()
        self.busy: set[str] = set()
        """Runs whose workflow task or query is being handled now."""
        self._max_cached = max_cached
        self._executor = executor
        self._close_timeout = close_timeout
        self._log = log

    @property
    def runs(self) -> list[str]:
        """Run ids in the cache, least recently used first."""
        return list(self._instances)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._instances

    def get(self, run_id: str) -> WorkflowInstance | None:
        """The cached instance of ``run_id``, if any."""
        return self._instances.get(run_id)

    def touch(self, run_id: str) -> None:
        """Mark ``run_id`` as the most recently used."""
        self._instances.move_to_end(run_id)

    async def keep(self, run_id: str, instance: WorkflowInstance) -> None:
        """Cache ``instance`` as the most recently used; beyond the limit, evict the least
        recently used runs that are not busy. A busy run's instance is in use (a task is
        being activated or completed on it): it stays, and the cache may hold more than its
        limit until such runs are done. An evicted instance is not cached."""
        if instance.is_evicted:
            self._instances.pop(run_id, None)
            return
        self._instances[run_id] = instance
        self._instances.move_to_end(run_id)
        while len(self._instances) > self._max_cached:
            idle = next((r for r in self._instances if r not in self.busy and r != run_id), None)
            if idle is None:
                return
            await self.evict(idle)  # taken out before its close yields: no task can claim it

    def forget(self, instance: WorkflowInstance) -> None:
        """Drop an instance whose thread is stuck, without closing it (that would block too)."""
        for run_id, cached in list(self._instances.items()):
            if cached is instance:
                del self._instances[run_id]

    async def drop(self, run_id: str, instance: WorkflowInstance | None) -> None:
        """Evict ``instance`` (if it is the cached one) or just close it."""
        if instance is None:
            return
        if self._instances.get(run_id) is instance:
            await self.evict(run_id)
        else:
            await self.close(instance)

    async def evict(self, run_id: str) -> None:
        """Remove run ``run_id``'s instance, if cached, and close it."""
        instance = self._instances.pop(run_id, None)
        if instance is not None:
            await self.close(instance)

    async def close(self, instance: WorkflowInstance) -> None:
        """Close ``instance`` in the thread pool (a failure is logged: eviction goes on)."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.run_in_executor(self._executor, instance.close), self._close_timeout
            )
        except Exception as exc:
            self._log.warning("evicting a workflow instance failed", error=repr(exc))
