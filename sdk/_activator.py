"""Running workflow code in the worker's thread pool, under the deadlock timeout.

``activate`` runs workflow code, which is user code: in a thread pool, so that the worker's own
loop (polling, heartbeats) never blocks, under a deadlock timeout (2 s by default, per recorded
workflow task when replaying). A task that overruns raises ``TaskFailure`` with cause
``deadlock`` and the stuck thread's stack, after ``on_deadlock`` dropped the instance (without
closing it: that would block too).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Executor

from chronicle.history.commands import Command
from chronicle.history.events import Event, WorkflowTaskFailedCause, WorkflowTaskStarted
from chronicle.history.values import Failure
from chronicle.sdk._info import WorkflowInfo
from chronicle.sdk._instance import WorkflowInstance

__all__ = ["Activator", "TaskFailure", "instance_info", "thread_stack"]


class TaskFailure(Exception):
    """The workflow task must be failed with ``cause`` and ``failure``."""

    def __init__(self, cause: WorkflowTaskFailedCause, failure: Failure) -> None:
        super().__init__(failure.message)
        self.cause = cause
        self.failure = failure


def thread_stack(thread_id: int | None) -> str:
    """The formatted stack of thread ``thread_id`` now, for a deadlock report."""
    frame = sys._current_frames().get(thread_id) if thread_id is not None else None
    return "".join(traceback.format_stack(frame)) if frame is not None else "(stack unavailable)"


class Activator:
    """Runs a ``WorkflowInstance``'s activations in ``executor`` (see the module docstring)."""

    def __init__(
        self,
        executor: Executor,
        deadlock_timeout: float | None,
        on_deadlock: Callable[[WorkflowInstance], None],
    ) -> None:
        self._executor = executor
        self._deadlock_timeout = deadlock_timeout
        self._on_deadlock = on_deadlock

    async def activate(
        self,
        instance: WorkflowInstance,
        events: list[Event],
        call: Callable[[], list[Command]] | None = None,
    ) -> list[Command]:
        """``instance.activate(events)`` (or ``call()``) in the thread pool, under the deadlock
        timeout."""
        loop = asyncio.get_running_loop()
        thread: list[int] = []
        started: list[float] = []

        def run() -> list[Command]:
            thread.append(threading.get_ident())
            started.append(time.monotonic())  # the clock of asyncio's loop.time()
            return call() if call is not None else instance.activate(events)

        future: asyncio.Future[list[Command]] = loop.run_in_executor(self._executor, run)
        if self._deadlock_timeout is None:
            return await future
        # A replay runs every recorded workflow task in one call: allow the timeout for each.
        tasks = sum(isinstance(e.attributes, WorkflowTaskStarted) for e in events)
        timeout = self._deadlock_timeout * max(1, tasks)
        # The timeout counts from when workflow code starts, not from when a thread frees up.
        # One asyncio.wait per round (no helper tasks): the common case finishes in the first.
        wait = timeout
        while True:
            done, _ = await asyncio.wait((future,), timeout=wait)
            if done:
                return future.result()
            if started:
                wait = started[0] + timeout - loop.time()
                if wait <= 0:
                    break
        stack = thread_stack(thread[0] if thread else None)
        info = instance_info(instance)
        message = (
            f"workflow task of {info} did not finish within "
            f"{timeout:g} s: workflow code blocked the thread "
            f"(blocking I/O, time.sleep, a lock?). Stuck at:\n{stack}"
        )
        self._on_deadlock(instance)
        raise TaskFailure(
            WorkflowTaskFailedCause.DEADLOCK,
            Failure(message=message, type="DeadlockError", stack=stack),
        ) from None


def instance_info(instance: WorkflowInstance) -> str:
    """``workflow 'id' (run …)`` for messages, from the instance's info when it has one."""
    info = getattr(instance, "info", None)
    if callable(info):
        info = info()
    if isinstance(info, WorkflowInfo):
        return f"workflow {info.workflow_id!r} (run {info.run_id}, type {info.workflow_type})"
    return "workflow"
