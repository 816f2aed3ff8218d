"""The activity half of a worker: poll activity tasks, run them, report the outcome.

At most ``max_concurrent`` activities run at once (a semaphore slot is taken *before* polling,
``_polling.py``, so the worker never leases a task it has no room for). Async activities run as
tasks on the worker's event loop; sync ones in a thread pool. Each runs with an activity context
(``chronicle.activity.info()``, ``heartbeat()``) whose heartbeats are throttled and sent with
``HeartbeatActivityTask`` (``_heartbeater.py``); when the server answers ``cancel_requested`` (or
no longer knows the task) the context's ``cancelled`` event is set and an async activity's task
is cancelled.

Outcomes are reported once: ``CompleteActivityTask`` with the encoded result, or
``FailActivityTask`` with the exception as a ``Failure``. ``NOT_FOUND`` on either means the
attempt is stale (it timed out and was retried elsewhere); that is logged and ignored.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from chronicle.history import wire
from chronicle.history.payloads import from_payloads, to_payload
from chronicle.history.values import Failure, FailureKind
from chronicle.protos.v1 import common_pb2, service_pb2
from chronicle.sdk import _grpc
from chronicle.sdk._definitions import ActivityDefinition
from chronicle.sdk._heartbeater import Heartbeater, heartbeat_interval
from chronicle.sdk._info import ActivityInfo
from chronicle.sdk._inline import InlineRun
from chronicle.sdk._lost_answers import (
    LostPolls,
    definite_refusal,
    new_request_id,
    release_eager_tasks,
)
from chronicle.sdk._polling import poll_into_slots
from chronicle.sdk.activity import ActivityContext, run_with_context
from chronicle.sdk.errors import CompleteAsyncError, exception_to_failure

__all__ = ["ActivityWorker", "EagerWorkflowTasks"]

_log = structlog.get_logger("chronicle.sdk.worker")


def _nothing() -> None:
    """Sync activities cannot be interrupted: they see cancellation at their next heartbeat."""


class EagerWorkflowTasks(Protocol):
    """The workflow half of the same worker, as seen by the activity half (eager tasks)."""

    async def reserve(self) -> bool:
        """Take a free workflow-task slot without waiting; False when none is free."""

    def release(self) -> None:
        """Give back a slot taken by ``reserve`` that no task used."""

    def start_reserved(self, task: service_pb2.PollWorkflowTaskResponse) -> None:
        """Run ``task`` in a slot taken by ``reserve``."""


class ActivityWorker:
    """Polls one task queue for activity tasks and runs them (see the module docstring).

    Eager dispatch: the workflow half reserves activity slots (``reserve``) before completing a
    workflow task and runs the activities the server started for it (``start_reserved``); when
    ``eager_workflow_tasks`` is set, a completion asks for the run's next workflow task
    (``CompleteActivityTaskRequest.eager_workflow_task``) whenever a workflow slot is free.
    """

    def __init__(
        self,
        connection: _grpc.Connection,
        *,
        namespace: str,
        task_queue: str,
        identity: str,
        activities: Sequence[ActivityDefinition],
        max_concurrent: int,
        executor: ThreadPoolExecutor | None = None,
        max_per_second: float = 0.0,
    ) -> None:
        self.connection = connection
        self.namespace = namespace
        self.task_queue = task_queue
        self.identity = identity
        self._activities = {d.name: d for d in activities}
        self._max_per_second = max_per_second
        self._slots = asyncio.Semaphore(max_concurrent)
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(
            max_workers=max_concurrent, thread_name_prefix="chronicle-activity"
        )
        self._running: dict[object, tuple[asyncio.Task[None], threading.Event]] = {}
        self._draining = False
        self._shutting_down = False
        self._log = _log.bind(namespace=namespace, task_queue=task_queue, identity=identity)
        self._lost_polls = LostPolls(
            connection, namespace=namespace, identity=identity, log=self._log
        )
        self.eager_workflow_tasks: EagerWorkflowTasks | None = None

    @property
    def activity_types(self) -> list[str]:
        """The activity type names served."""
        return list(self._activities)

    def serves(self, activity_type: str) -> bool:
        """Whether this worker runs activities of ``activity_type``."""
        return activity_type in self._activities

    async def reserve(self, wanted: int) -> int:
        """Take up to ``wanted`` free slots without waiting; returns how many were taken.

        ``acquire`` on an unlocked semaphore (a free slot and nobody queued) never suspends.
        A rate-limited worker takes none: eager starts would bypass the queue's limit.
        """
        if self._max_per_second > 0 or self._draining:
            return 0
        taken = 0
        while taken < wanted and not self._slots.locked():
            await self._slots.acquire()
            taken += 1
        return taken

    def release(self, count: int) -> None:
        """Give back ``count`` slots taken by ``reserve`` that no task used."""
        for _ in range(count):
            self._slots.release()

    def start_reserved(self, task: service_pb2.PollActivityTaskResponse) -> None:
        """Run ``task`` (dispatched eagerly) in a slot taken by ``reserve``."""
        self._start(task)

    def start_inline(self, task: service_pb2.PollActivityTaskResponse, run: InlineRun) -> None:
        """Run ``task`` before its schedule is recorded (``_inline.py``), in a reserved slot."""
        self._start(task, run)

    async def poll_forever(self) -> None:
        """Poll and dispatch until cancelled; in-flight activities keep running."""
        request = service_pb2.PollActivityTaskRequest(
            namespace=self.namespace,
            task_queue=self.task_queue,
            identity=self.identity,
            max_activities_per_second=self._max_per_second,
        )
        await poll_into_slots(
            self._slots,
            self.connection,
            "PollActivityTask",
            request,
            self._log,
            self._start,
            self._lost_polls,
        )

    def _start(
        self, task: service_pb2.PollActivityTaskResponse, run: InlineRun | None = None
    ) -> None:
        """Run ``task`` in a slot already taken; the slot is released when it is done.

        ``run``: the task runs inline, before its schedule is recorded (``_inline.py``).
        """
        cancelled = threading.Event()
        runner = asyncio.create_task(
            self._run_task(task, cancelled, run),
            name=f"activity {task.activity_type} {task.activity_id}",
        )
        key = object()  # not the token: an inline token repeats when a workflow task is retried
        self._running[key] = (runner, cancelled)
        runner.add_done_callback(functools.partial(self._done, key, run))

    def _done(self, key: object, run: InlineRun | None, _task: asyncio.Task[None]) -> None:
        self._running.pop(key, None)
        if run is not None:
            run.detach()  # ended without delivering a result (crashed, cancelled)
        self._slots.release()

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` s for running activities, then cancel the rest and wait for them.

        From now on no slot is handed out for eager or inline tasks."""
        self._draining = True
        if not self._running:
            return
        tasks = [task for task, _ in self._running.values()]
        self._log.info("waiting for running activities", count=len(tasks), grace=grace)
        _, pending = await asyncio.wait(tasks, timeout=grace)
        if pending:
            self._log.warning(
                "cancelling activities still running after the grace period", count=len(pending)
            )
            self._shutting_down = True
            for task, cancelled in list(self._running.values()):
                cancelled.set()
                task.cancel()
            await asyncio.wait(pending, timeout=5.0)

    def close(self) -> None:
        """Release the thread pool (without waiting for threads stuck in user code)."""
        self._lost_polls.close()
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run_task(
        self,
        task: service_pb2.PollActivityTaskResponse,
        cancelled: threading.Event,
        run: InlineRun | None,
    ) -> None:
        execution = task.workflow_execution
        log = self._log.bind(
            workflow_id=execution.workflow_id,
            run_id=execution.run_id,
            activity_id=task.activity_id,
            activity_type=task.activity_type,
            attempt=task.attempt,
        )
        definition = self._activities.get(task.activity_type)
        if definition is None:
            known = ", ".join(sorted(self._activities)) or "none"
            log.error("unknown activity type")
            await self._fail(
                task,
                log,
                Failure(
                    message=(
                        f"activity type {task.activity_type!r} is not registered on worker "
                        f"{self.identity} (task queue {self.task_queue!r}); it serves: {known}"
                    ),
                    type="ActivityNotRegisteredError",
                    non_retryable=False,
                ),
                run,
            )
            return
        try:
            args = from_payloads(wire.payloads_from_proto(task.input), definition.arg_hints)
            details = from_payloads(
                wire.payloads_from_proto(task.heartbeat_details),
                [Any] * len(task.heartbeat_details),
            )
        except Exception as exc:
            log.error("cannot decode activity input", error=str(exc))
            await self._fail(
                task,
                log,
                Failure(
                    message=f"cannot decode the input of activity {task.activity_type!r}: {exc}",
                    type=type(exc).__name__,
                    non_retryable=True,
                ),
                run,
            )
            return
        info = self._info(task, tuple(details))
        current = asyncio.current_task()
        assert current is not None
        interval = heartbeat_interval(wire.duration_from_proto(task, "heartbeat_timeout"))
        on_cancel: Callable[[], object] = current.cancel if definition.is_async else _nothing
        heartbeater = Heartbeater(self, task.task_token, interval, cancelled, on_cancel, log, run)
        context = ActivityContext(info=info, heartbeat=heartbeater.heartbeat, cancelled=cancelled)
        started = time.monotonic()
        try:
            result = await run_with_context(definition, args, context, self._executor)
        except asyncio.CancelledError:
            heartbeater.stop()
            if self._shutting_down or not cancelled.is_set():
                # The worker is stopping, not the activity: fail retryably so it runs again.
                log.warning("activity interrupted by worker shutdown")
                await self._fail(
                    task,
                    log,
                    Failure(
                        message=f"worker {self.identity} shut down while the activity ran",
                        type="WorkerShutdown",
                    ),
                    run,
                )
                if not cancelled.is_set():
                    raise
                return
            log.info("activity cancelled")
            await self._fail(
                task,
                log,
                Failure(
                    message="activity cancelled", type="CancelledError", kind=FailureKind.CANCELLED
                ),
                run,
            )
            return
        except BaseException as exc:
            heartbeater.stop()
            if isinstance(exc, CompleteAsyncError):
                log.info("activity will complete asynchronously")
                if run is not None:
                    run.detach()  # recorded as started: the completer's token must be valid
                # The attempt is no longer this worker's: its stopping must not time it out.
                await self._report(
                    log,
                    "HeartbeatActivityTask",
                    service_pb2.HeartbeatActivityTaskRequest(
                        namespace=self.namespace,
                        task_token=task.task_token,
                        identity=self.identity,
                        handed_off=True,
                    ),
                    run,
                )
                return
            if not isinstance(exc, Exception):
                raise
            log.info(
                "activity failed",
                error=f"{type(exc).__name__}: {exc}",
                seconds=round(time.monotonic() - started, 3),
            )
            await self._fail(task, log, exception_to_failure(exc), run)
            return
        heartbeater.stop()
        try:
            payload = wire.payload_to_proto(to_payload(result))
        except Exception as exc:
            await self._fail(
                task,
                log,
                Failure(
                    message=f"cannot encode the result of activity {task.activity_type!r}: {exc}",
                    type=type(exc).__name__,
                    non_retryable=True,
                ),
                run,
            )
            return
        log.debug("activity completed", seconds=round(time.monotonic() - started, 3))
        if run is not None and run.deliver(payload):
            return  # travels in the workflow-task completion that records it
        await self._report(
            log,
            "CompleteActivityTask",
            service_pb2.CompleteActivityTaskRequest(
                namespace=self.namespace,
                task_token=task.task_token,
                result=payload,
                identity=self.identity,
            ),
            run,
            task.workflow_execution,
        )

    def _info(
        self, task: service_pb2.PollActivityTaskResponse, details: tuple[Any, ...]
    ) -> ActivityInfo:
        now = datetime.now(UTC)
        return ActivityInfo(
            activity_id=task.activity_id,
            activity_type=task.activity_type,
            attempt=task.attempt or 1,
            workflow_id=task.workflow_execution.workflow_id,
            run_id=task.workflow_execution.run_id,
            workflow_type=task.workflow_type,
            namespace=self.namespace,
            task_queue=task.task_queue or self.task_queue,
            task_token=task.task_token,
            scheduled_time=wire.timestamp_from_proto(task, "scheduled_time") or now,
            started_time=wire.timestamp_from_proto(task, "started_time") or now,
            heartbeat_details=details,
            start_to_close_timeout=wire.duration_from_proto(task, "start_to_close_timeout"),
            heartbeat_timeout=wire.duration_from_proto(task, "heartbeat_timeout"),
        )

    async def _fail(
        self,
        task: service_pb2.PollActivityTaskResponse,
        log: Any,
        failure: Failure,
        run: InlineRun | None = None,
    ) -> None:
        await self._report(
            log,
            "FailActivityTask",
            service_pb2.FailActivityTaskRequest(
                namespace=self.namespace,
                task_token=task.task_token,
                failure=wire.failure_to_proto(failure),
                identity=self.identity,
            ),
            run,
        )

    async def _report(
        self,
        log: Any,
        method: str,
        request: Any,
        run: InlineRun | None = None,
        execution: common_pb2.WorkflowExecution | None = None,
    ) -> None:
        """Send ``request``; a ``CompleteActivityTask`` (of a task of run ``execution``) asks
        for the run's next workflow task when a workflow slot is free."""
        if run is not None and not await run.recorded():
            log.info("activity outcome not reported: its inline schedule was not recorded")
            return
        eager = self.eager_workflow_tasks
        reserved = False
        if execution is not None and eager is not None and await eager.reserve():
            reserved = request.eager_workflow_task = True
            request.request_id = new_request_id()
        try:
            response = await self.connection.call(method, request)
            if reserved and response.workflow_task.task_token:
                assert eager is not None
                reserved = False
                eager.start_reserved(response.workflow_task)
        except Exception as exc:
            if isinstance(exc, _grpc.NotFoundError):
                log.info(
                    "activity outcome not recorded: the attempt is stale",
                    method=method,
                    detail=str(exc),
                )
            else:
                log.error(
                    "could not report the activity outcome; the server will time it out",
                    method=method,
                    error=str(exc),
                )
            if reserved and execution is not None and not definite_refusal(exc):
                # The commit may have started the run's next task for this worker, in the
                # answer it never got (_lost_answers.py).
                await release_eager_tasks(
                    self.connection,
                    namespace=self.namespace,
                    execution=execution,
                    identity=self.identity,
                    request_id=request.request_id,
                    log=log,
                )
        finally:
            if reserved:
                assert eager is not None
                eager.release()
