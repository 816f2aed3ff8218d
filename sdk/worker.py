"""``Worker``: serves workflows and activities of one task queue.

```python
async with Worker(client, task_queue="orders", workflows=[order], activities=[charge_card]):
    ...                        # polls in the background until the block exits
await Worker(client, task_queue="orders", workflows=[order]).run()   # or: until cancelled
```

Shutdown (leaving the ``async with`` block, cancelling ``run()``, or ``shutdown()``) stops
polling at once, gives running activities ``graceful_shutdown_timeout`` to finish (then cancels
them; they are reported as retryable failures so another worker runs them again), lets workflow
tasks in progress finish, and evicts the sticky cache.

Every worker instance has a unique ``identity`` (``host:pid:uuid``): the server routes a run's
next workflow task to the worker that holds it in its sticky cache by this name.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any

import structlog

from chronicle.protos.v1 import service_pb2
from chronicle.sdk._activity_worker import ActivityWorker
from chronicle.sdk._definitions import (
    ActivityDefinition,
    WorkflowDefinition,
    activity_definition,
    workflow_definition,
)
from chronicle.sdk._grpc import RPCError, UnimplementedError
from chronicle.sdk._guards import GuardMode, guard_source
from chronicle.sdk._workflow_worker import WorkflowWorker
from chronicle.sdk.client import Client

__all__ = ["Worker"]

_log = structlog.get_logger("chronicle.sdk.worker")

_SESSION_REOPEN_FIRST = 0.1
"""Seconds before the first attempt to reopen a broken ``WorkerSession``; each failed attempt
doubles the wait, up to ``_SESSION_REOPEN_MAX``, and a session that was open resets it."""
_SESSION_REOPEN_MAX = 5.0


def _definitions(items: Sequence[Any], kind: str, get: Callable[[Any], Any]) -> list[Any]:
    definitions: list[Any] = []
    names: set[str] = set()
    for item in items:
        try:
            definition = get(item)
        except TypeError:
            raise TypeError(
                f"Worker({kind}s=...): {item!r} is not decorated with @{kind}"
            ) from None
        if definition.name in names:
            raise ValueError(f"Worker({kind}s=...): two {kind}s are named {definition.name!r}")
        names.add(definition.name)
        definitions.append(definition)
    return definitions


class Worker:
    """Polls ``task_queue`` for workflow and activity tasks and runs the given functions."""

    def __init__(
        self,
        client: Client,
        *,
        task_queue: str,
        workflows: Sequence[Any] = (),
        activities: Sequence[Any] = (),
        max_concurrent_workflow_tasks: int = 20,
        max_concurrent_activities: int = 100,
        max_activities_per_second: float | None = None,
        max_cached_workflows: int = 1000,
        workflow_pollers: int = 2,
        activity_pollers: int = 2,
        deadlock_timeout: timedelta | float | None = 2.0,
        graceful_shutdown_timeout: timedelta | float = 10.0,
        identity: str | None = None,
        determinism_guard: GuardMode = "warn",
        inline_activity_budget: timedelta | float = 0.02,
    ) -> None:
        """Validate the definitions now: a function that is not decorated raises ``TypeError``.

        ``deadlock_timeout`` (``None`` disables it, e.g. under a debugger) bounds how long one
        workflow activation may hold its thread. ``max_concurrent_activities`` bounds the
        activities this worker runs at once; ``max_activities_per_second`` limits the whole task
        queue, across all its workers, and is enforced by the server. ``determinism_guard``:
        workflow code that calls ``time.time``, ``datetime.now``, ``random.*``, ``uuid.uuid4``,
        ``time.sleep``, ``open``, sockets or threads gets a ``WorkflowDeterminismWarning``
        (``"warn"``), a ``NondeterministicCallError`` that fails the workflow task
        (``"strict"``), or nothing (``"off"``). ``inline_activity_budget``: how long a workflow
        task's completion waits for the activities it schedules that this worker runs at once,
        before their schedule is recorded, so that their results are recorded with it (one
        round trip per sequential activity; ``0`` turns inline activities off; see
        docs/inline-activities.md).
        """
        if not task_queue:
            raise ValueError("Worker(task_queue=...) must not be empty")
        self._workflow_defs: list[WorkflowDefinition] = _definitions(
            workflows, "workflow", workflow_definition
        )
        for definition in self._workflow_defs:
            guard_source(definition.fn, determinism_guard)
        self._activity_defs: list[ActivityDefinition] = _definitions(
            activities, "activity", activity_definition
        )
        if not self._workflow_defs and not self._activity_defs:
            raise ValueError("Worker needs at least one workflow or activity to serve")
        for name, value in (
            ("max_concurrent_workflow_tasks", max_concurrent_workflow_tasks),
            ("max_concurrent_activities", max_concurrent_activities),
            ("max_cached_workflows", max_cached_workflows),
            ("workflow_pollers", workflow_pollers),
            ("activity_pollers", activity_pollers),
        ):
            if value < 1:
                raise ValueError(f"Worker({name}=...) must be at least 1, got {value}")
        if max_activities_per_second is not None and not (
            0 < max_activities_per_second < float("inf")
        ):
            raise ValueError(
                "Worker(max_activities_per_second=...) must be a positive number, got "
                f"{max_activities_per_second}"
            )
        self.client = client
        self.task_queue = task_queue
        self.identity = identity or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._grace = _seconds(graceful_shutdown_timeout)
        inline_budget = _seconds(inline_activity_budget)
        if inline_budget < 0:
            raise ValueError(
                f"Worker(inline_activity_budget=...) must not be negative, got {inline_budget}"
            )
        deadlock = None if deadlock_timeout is None else _seconds(deadlock_timeout)
        self._workflow_pollers = workflow_pollers
        self._activity_pollers = activity_pollers
        self._workflow_worker = (
            WorkflowWorker(
                client.connection,
                namespace=client.namespace,
                task_queue=task_queue,
                identity=self.identity,
                workflows=self._workflow_defs,
                activities=self._activity_defs,
                max_concurrent=max_concurrent_workflow_tasks,
                max_cached=max_cached_workflows,
                deadlock_timeout=deadlock,
                guard_mode=determinism_guard,
                inline_activity_budget=inline_budget,
            )
            if self._workflow_defs
            else None
        )
        self._activity_worker = (
            ActivityWorker(
                client.connection,
                namespace=client.namespace,
                task_queue=task_queue,
                identity=self.identity,
                activities=self._activity_defs,
                max_concurrent=max_concurrent_activities,
                max_per_second=max_activities_per_second or 0.0,
            )
            if self._activity_defs
            else None
        )
        if self._workflow_worker is not None and self._activity_worker is not None:
            # Eager dispatch (docs/performance.md): each half hands the other the next task.
            self._workflow_worker.eager_activities = self._activity_worker
            self._activity_worker.eager_workflow_tasks = self._workflow_worker
        self._background: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._log = _log.bind(
            namespace=client.namespace, task_queue=task_queue, identity=self.identity
        )

    @property
    def workflow_types(self) -> list[str]:
        """The workflow type names this worker serves."""
        return [d.name for d in self._workflow_defs]

    @property
    def activity_types(self) -> list[str]:
        """The activity type names this worker serves."""
        return [d.name for d in self._activity_defs]

    async def run(self) -> None:
        """Poll and run tasks until cancelled or :meth:`shutdown`; then shut down gracefully."""
        self._log.info(
            "worker started", workflows=self.workflow_types, activities=self.activity_types
        )
        pollers: list[asyncio.Task[None]] = []
        if self._workflow_worker is not None:
            pollers += [
                asyncio.create_task(
                    self._workflow_worker.poll_forever(), name=f"workflow poller {i}"
                )
                for i in range(self._workflow_pollers)
            ]
        if self._activity_worker is not None:
            pollers += [
                asyncio.create_task(
                    self._activity_worker.poll_forever(), name=f"activity poller {i}"
                )
                for i in range(self._activity_pollers)
            ]
        stop = asyncio.create_task(self._stop.wait())
        session = asyncio.create_task(self._hold_session(), name="worker session")
        try:
            done, _ = await asyncio.wait([*pollers, stop], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            stop.cancel()
            for task in pollers:
                task.cancel()
            await asyncio.gather(*pollers, return_exceptions=True)
            # The session closes only once everything started was reported (even when this
            # task is cancelled and the drain goes on behind the shield).
            drain = asyncio.ensure_future(self._drain())
            drain.add_done_callback(lambda _: session.cancel())
            await asyncio.shield(drain)

    async def _hold_session(self) -> None:
        """Keep a ``WorkerSession`` stream open while running (reopened when it breaks).

        Its break tells the server this worker is gone, so the tasks it started time out at
        once instead of when their timeouts fall due. It is closed only after ``_drain``, when
        everything started has been reported.
        """
        request = service_pb2.WorkerSessionRequest(
            namespace=self.client.namespace, task_queue=self.task_queue, identity=self.identity
        )
        delay = _SESSION_REOPEN_FIRST
        while True:
            established = asyncio.Event()  # the server's one message: the session is open
            try:
                await self.client.connection.hold("WorkerSession", request, established.set)
            except UnimplementedError:
                return  # an older server: timeouts alone detect lost workers
            except RPCError as exc:
                self._log.debug("worker session broke; reopening", error=str(exc))
            if established.is_set():
                # Only failed attempts back off: after a session that was open, the worker
                # must not stay without one (the server could not tell it died meanwhile).
                delay = _SESSION_REOPEN_FIRST
            await asyncio.sleep(delay)
            delay = min(delay * 2, _SESSION_REOPEN_MAX)

    async def _drain(self) -> None:
        self._log.info("worker shutting down")
        if self._activity_worker is not None:
            await self._activity_worker.drain(self._grace)
            self._activity_worker.close()
        if self._workflow_worker is not None:
            await self._workflow_worker.drain(self._grace)
            self._workflow_worker.close()
        self._log.info("worker stopped")

    def shutdown(self) -> None:
        """Ask :meth:`run` to stop polling and shut down gracefully."""
        self._stop.set()

    async def __aenter__(self) -> Worker:
        if self._background is not None:
            raise RuntimeError("this Worker is already running")
        self._background = asyncio.create_task(self.run(), name=f"worker {self.identity}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._background = self._background, None
        if task is None:
            return
        self.shutdown()
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
