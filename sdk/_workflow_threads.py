"""The threads workflow code runs in: a pool that a stuck thread does not shrink.

Python cannot stop a thread. Workflow code that blocks (a deadlock, ``time.sleep``, a lock)
keeps its pool thread after the deadlock timeout gave up on it, and each retry of the task
may strand another, until the pool has no thread left and every workflow on the worker stops.
So when a thread is given up on, the pool is replaced by a fresh one of the same size
(``abandon``): the old pool gets no new work and lets its threads go as they finish. A
stuck thread is leaked, not reused: it goes on until its code returns, if ever.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["WorkflowThreads"]

P = ParamSpec("P")
T = TypeVar("T")


class WorkflowThreads(Executor):
    """An executor of ``size`` threads, replaced when one of them is stuck (module docstring)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self.abandoned = 0
        """How many times a stuck thread's pool was replaced."""
        self._pool = self._new_pool()

    def _new_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self._size, thread_name_prefix="chronicle-workflow")

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` in the current pool."""
        return self._pool.submit(fn, *args, **kwargs)

    def abandon(self) -> None:
        """A thread of the current pool is stuck in workflow code: new work goes to a new
        pool; the old one finishes what it has and lets its threads go."""
        stuck, self._pool = self._pool, self._new_pool()
        self.abandoned += 1
        stuck.shutdown(wait=False)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Shut the current pool down (see ``ThreadPoolExecutor.shutdown``)."""
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def __repr__(self) -> str:
        return f"WorkflowThreads(size={self._size}, abandoned={self.abandoned})"
