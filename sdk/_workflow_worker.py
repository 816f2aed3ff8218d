"""The workflow half of a worker: poll workflow tasks, advance workflow code, answer commands.

Sticky cache (``_sticky_cache.py``): an LRU map ``run_id → WorkflowInstance``. A task runs on
the cached instance when its events continue it, else on a fresh instance, replaying the whole
history when the task's events do not start the run (``_instance_lookup.py``).

``activate`` runs workflow code, which is user code: in a thread pool so that the worker's own
loop (polling, heartbeats) never blocks, under a deadlock timeout (``_activator.py``; 2 s by
default). A task that overruns fails with cause ``deadlock`` and the stuck thread's stack; the
instance is dropped. Any error from ``activate`` fails the *task* (the server retries it, the
run stays open) and evicts the instance: ``NondeterminismError`` and ``WorkflowTaskError`` with
their own cause, anything else as ``workflow_error``. An instance whose workflow closed is
evicted after its final commands are accepted.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from chronicle.history import wire
from chronicle.history.commands import (
    CLOSE_COMMAND_TYPES,
    Command,
    RequestCancelActivity,
    ScheduleActivity,
)
from chronicle.history.events import WorkflowTaskFailedCause
from chronicle.history.values import Failure
from chronicle.protos.v1 import service_pb2
from chronicle.sdk import _grpc
from chronicle.sdk._activator import Activator, TaskFailure
from chronicle.sdk._activity_worker import ActivityWorker
from chronicle.sdk._definitions import ActivityDefinition, WorkflowDefinition
from chronicle.sdk._guards import GuardMode
from chronicle.sdk._inline import MAX_INLINE, InlineBatch
from chronicle.sdk._inline import activity_task as inline_activity_task
from chronicle.sdk._instance import WorkflowInstance
from chronicle.sdk._instance_lookup import InstanceLookup
from chronicle.sdk._local import LocalActivityRequest, LocalOutcome, run_local_activities
from chronicle.sdk._lost_answers import (
    LostPolls,
    definite_refusal,
    new_request_id,
    release_eager_tasks,
)
from chronicle.sdk._polling import poll_into_slots
from chronicle.sdk._query_tasks import QueryTasks
from chronicle.sdk._sticky_cache import StickyCache
from chronicle.sdk._workflow_threads import WorkflowThreads
from chronicle.sdk.errors import StaleInstanceError, WorkflowTaskError, exception_to_failure

__all__ = ["WorkflowWorker"]

_log = structlog.get_logger("chronicle.sdk.worker")

MAX_EAGER_ACTIVITIES = 3
"""Activities one workflow-task completion may take eagerly (the rest go to the queue, so that
other workers share a fan-out)."""


class WorkflowWorker:
    """Polls one task queue for workflow tasks and runs them (see the module docstring)."""

    def __init__(
        self,
        connection: _grpc.Connection,
        *,
        namespace: str,
        task_queue: str,
        identity: str,
        workflows: Sequence[WorkflowDefinition],
        max_concurrent: int,
        activities: Sequence[ActivityDefinition] = (),
        max_cached: int = 1000,
        deadlock_timeout: float | None = 2.0,
        guard_mode: GuardMode = "warn",
        inline_activity_budget: float = 0.0,
    ) -> None:
        self.connection = connection
        self._inline_budget = inline_activity_budget
        self.namespace = namespace
        self.task_queue = task_queue
        self.identity = identity
        self._workflows = {d.name: d for d in workflows}
        self._activities = {d.name: d for d in activities}
        self._local_executor: ThreadPoolExecutor | None = None
        self._deadlock_timeout = deadlock_timeout
        self._draining = False
        self._slots = asyncio.Semaphore(max_concurrent)
        self._running: set[asyncio.Task[None]] = set()
        self._executor = WorkflowThreads(max_concurrent)
        self._log = _log.bind(namespace=namespace, task_queue=task_queue, identity=identity)
        self._lost_polls = LostPolls(
            connection, namespace=namespace, identity=identity, log=self._log
        )
        self._cache = StickyCache(max_cached, self._executor, deadlock_timeout or 10.0, self._log)
        self._activator = Activator(self._executor, deadlock_timeout, self._stuck)
        self._instances = InstanceLookup(self._cache, namespace, task_queue, guard_mode)
        self._queries = QueryTasks(
            namespace=namespace,
            workflows=self._workflows,
            cache=self._cache,
            instances=self._instances,
            activator=self._activator,
            executor=self._executor,
            deadlock_timeout=deadlock_timeout,
            stuck=self._stuck,
        )
        self.eager_activities: ActivityWorker | None = None
        """The activity half of the same worker: completions ask for eager activity tasks."""

    def _stuck(self, instance: WorkflowInstance) -> None:
        """A thread is stuck in ``instance``'s code: drop the instance without closing it (that
        would block too), and give the other tasks a fresh pool (``_workflow_threads.py``)."""
        self._cache.forget(instance)
        self._executor.abandon()

    @property
    def cached_runs(self) -> list[str]:
        """Run ids in the sticky cache, least recently used first."""
        return self._cache.runs

    async def poll_forever(self) -> None:
        """Poll and dispatch until cancelled; tasks being processed keep running."""
        request = service_pb2.PollWorkflowTaskRequest(
            namespace=self.namespace, task_queue=self.task_queue, identity=self.identity
        )
        await poll_into_slots(
            self._slots,
            self.connection,
            "PollWorkflowTask",
            request,
            self._log,
            self.start_reserved,
            self._lost_polls,
        )

    async def reserve(self) -> bool:
        """Take a free slot without waiting (for an eager task); False when none is free."""
        if self._slots.locked() or self._draining:
            return False
        await self._slots.acquire()  # never suspends: the semaphore is not locked
        return True

    def release(self) -> None:
        """Give back a slot taken by ``reserve`` that no task used."""
        self._slots.release()

    def start_reserved(self, task: service_pb2.PollWorkflowTaskResponse) -> None:
        """Handle ``task`` in a slot already taken; the slot is released when it is done."""
        runner = asyncio.create_task(
            self._handle(task), name=f"workflow task {task.workflow_execution.run_id}"
        )
        self._running.add(runner)
        runner.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            self._log.error("workflow task handler crashed", exc_info=task.exception())

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` s for tasks in progress, then evict the whole cache.

        From now on no next task is taken eagerly."""
        self._draining = True
        if self._running:
            _, pending = await asyncio.wait(list(self._running), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        for run_id in self._cache.runs:
            await self._cache.evict(run_id)

    def close(self) -> None:
        """Release the thread pool (without waiting for threads stuck in workflow code)."""
        self._lost_polls.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._local_executor is not None:
            self._local_executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ one task

    async def _handle(self, task: service_pb2.PollWorkflowTaskResponse) -> None:
        """Handle ``task`` and then each next task of the run the server hands back at once."""
        next_task: service_pb2.PollWorkflowTaskResponse | None = task
        while next_task is not None:
            next_task = await self._handle_one(next_task)

    async def _handle_one(
        self, task: service_pb2.PollWorkflowTaskResponse
    ) -> service_pb2.PollWorkflowTaskResponse | None:
        execution = task.workflow_execution
        log = self._log.bind(
            workflow_id=execution.workflow_id,
            run_id=execution.run_id,
            workflow_type=task.workflow_type,
            attempt=task.attempt,
        )
        if task.HasField("query") and not task.events:
            await self._queries.answer(self.connection, task, log)
            return None
        run_id = execution.run_id
        definition = self._workflows.get(task.workflow_type)
        if definition is None:
            known = ", ".join(sorted(self._workflows)) or "none"
            log.error("unknown workflow type")
            await self._fail(
                task,
                log,
                WorkflowTaskFailedCause.UNKNOWN_WORKFLOW_TYPE,
                Failure(
                    message=(
                        f"workflow type {task.workflow_type!r} is not registered on worker "
                        f"{self.identity} (task queue {self.task_queue!r}); it serves: {known}"
                    ),
                    type="WorkflowNotRegisteredError",
                ),
            )
            return None
        instance: WorkflowInstance | None = None
        shared = run_id not in self._cache.busy
        self._cache.busy.add(run_id)
        try:
            try:
                events = wire.events_from_proto(task.events)
                instance, events = await self._instances.for_task(
                    self.connection, task, definition, events, shared, log
                )
                try:
                    commands = await self._activator.activate(instance, events)
                except StaleInstanceError:
                    log.info("cached instance is stale; replaying the full history")
                    await self._cache.drop(run_id, instance)
                    instance, events = await self._instances.replayed(
                        self.connection, task, definition, events, log
                    )
                    commands = await self._activator.activate(instance, events)
                while due := instance.local_activities_due:
                    outcomes = await self._run_local_activities(due, log)
                    resume = functools.partial(instance.resume_local_activities, outcomes)
                    commands = await self._activator.activate(instance, [], resume)
            except TaskFailure as exc:
                log.error("workflow task failed", cause=str(exc.cause), error=exc.failure.message)
                await self._fail(task, log, exc.cause, exc.failure)
                return None
            except WorkflowTaskError as exc:
                log.error("workflow task failed", cause=str(exc.cause), error=str(exc))
                await self._cache.drop(run_id, instance)
                await self._fail(task, log, exc.cause, exc.failure)
                return None
            except Exception as exc:
                log.exception("workflow task failed", cause="workflow_error")
                await self._cache.drop(run_id, instance)
                await self._fail(
                    task, log, WorkflowTaskFailedCause.WORKFLOW_ERROR, exception_to_failure(exc)
                )
                return None
            # Still busy while the answer is in flight: a next task of the run arriving meanwhile
            # (the server may have committed this one) must not share an instance that a failed
            # completion is about to drop.
            return await self._complete(task, instance, commands, shared, log)
        finally:
            if shared:
                self._cache.busy.discard(run_id)

    async def _run_local_activities(
        self, due: list[LocalActivityRequest], log: Any
    ) -> dict[int, LocalOutcome]:
        """Run the local activities a live activation waits for (``_local.py``)."""
        if self._local_executor is None:
            self._local_executor = ThreadPoolExecutor(thread_name_prefix="chronicle-local")
        return await run_local_activities(
            due, self._activities, self._local_executor, identity=self.identity, log=log
        )

    async def _complete(
        self,
        task: service_pb2.PollWorkflowTaskResponse,
        instance: WorkflowInstance,
        commands: list[Command],
        shared: bool,
        log: Any,
    ) -> service_pb2.PollWorkflowTaskResponse | None:
        """Send the task's commands; returns the run's next task when the server started it for
        this worker (``eager_workflow_task``: the instance stays cached for it)."""
        run_id = task.workflow_execution.run_id
        closing = any(isinstance(c, tuple(CLOSE_COMMAND_TYPES)) for c in commands)
        keep = shared and not closing and not self._draining
        request = service_pb2.CompleteWorkflowTaskRequest(
            namespace=self.namespace,
            task_token=task.task_token,
            commands=[wire.command_to_proto(c) for c in commands],
            identity=self.identity,
            eager_workflow_task=keep,
        )
        batch = await self._start_inline(task, commands) if keep else None
        if batch is not None:
            await batch.wait(self._inline_budget)
            for run in batch.runs:
                if run.delivered:
                    request.inline_results.add(activity_id=run.activity_id, result=run.result)
                else:
                    request.inline_started_activity_ids.append(run.activity_id)
        eager = self.eager_activities
        reserved = 0
        if eager is not None:
            wanted = sum(isinstance(c, ScheduleActivity) for c in commands)
            wanted -= len(batch.runs) if batch is not None else 0
            reserved = await eager.reserve(min(wanted, MAX_EAGER_ACTIVITIES))
            if reserved:
                request.max_eager_activities = reserved
                request.eager_activity_types.extend(eager.activity_types)
        if keep or reserved:
            # Names this completion (the same on each retry of the call): what it starts
            # eagerly for this worker records it, for a release after a lost answer.
            request.request_id = new_request_id()
        try:
            try:
                response = await self.connection.call("CompleteWorkflowTask", request)
            except Exception as exc:
                await self._not_completed(task, instance, request, batch, exc, log)
                return None
            # Only the call is guarded above: a failure past this point is not a lost answer
            # (the tasks the answer carries are this worker's, and must not be released).
            if batch is not None:
                batch.resolve(True)
            for activity_task in response.activity_tasks[:reserved]:
                eager.start_reserved(activity_task)  # type: ignore[union-attr]
                reserved -= 1
        finally:
            if reserved:
                eager.release(reserved)  # type: ignore[union-attr]
        log.debug(
            "workflow task completed",
            commands=[type(c).__name__ for c in commands],
            inline_results=len(request.inline_results),
        )
        if not keep:
            await self._cache.drop(run_id, instance)
            return None
        await self._cache.keep(run_id, instance)
        return response.workflow_task if response.workflow_task.task_token else None

    async def _not_completed(
        self,
        task: service_pb2.PollWorkflowTaskResponse,
        instance: WorkflowInstance,
        request: service_pb2.CompleteWorkflowTaskRequest,
        batch: InlineBatch | None,
        exc: Exception,
        log: Any,
    ) -> None:
        """The completion ``request`` of ``task`` failed with ``exc``: drop the instance and,
        unless the failure says nothing was applied, release what its commit may have started
        eagerly for this worker in the answer it never got (_lost_answers.py)."""
        # Only a definite refusal means nothing was recorded (_lost_answers.py).
        refused = definite_refusal(exc)
        if batch is not None:
            # After a lost answer the inline activities report anyway (a stale report is
            # refused as NOT_FOUND).
            batch.resolve(not refused)
        stale = isinstance(exc, _grpc.NotFoundError)
        (log.info if stale else log.error)(
            "workflow task completion not accepted; dropping the cached instance",
            error=str(exc),
        )
        await self._cache.drop(task.workflow_execution.run_id, instance)
        if request.request_id and not refused:
            # The commit may have started the run's next task and activities for this worker:
            # release them rather than wait for their timeouts.
            await release_eager_tasks(
                self.connection,
                namespace=self.namespace,
                execution=task.workflow_execution,
                identity=self.identity,
                request_id=request.request_id,
                log=log,
            )
        if isinstance(exc, _grpc.InvalidArgumentError) and not exc.retried:
            # The code asked for something the server refuses (a duration or id over its
            # limit, a payload too large): say so in the history, where it can be seen.
            failure = Failure(
                message=f"the server refused the workflow task's commands: {exc}",
                type="InvalidArgumentError",
            )
            await self._fail(task, log, WorkflowTaskFailedCause.BAD_COMMAND, failure)

    async def _start_inline(
        self, task: service_pb2.PollWorkflowTaskResponse, commands: list[Command]
    ) -> InlineBatch | None:
        """Start the activities of ``commands`` this worker may run inline (``_inline.py``)."""
        activities = self.eager_activities
        if activities is None or self._inline_budget <= 0 or task.activities_rate_limited:
            return None
        cancelled = {c.seq for c in commands if isinstance(c, RequestCancelActivity)}
        eligible = [
            c
            for c in commands
            if isinstance(c, ScheduleActivity)
            and c.task_queue in ("", task.task_queue)
            and c.seq not in cancelled
            and activities.serves(c.activity_type)
        ][:MAX_INLINE]
        taken = await activities.reserve(len(eligible)) if eligible else 0
        if not taken:
            return None
        batch = InlineBatch()
        for command in eligible[:taken]:
            message = inline_activity_task(self.namespace, task, command)
            activities.start_inline(message, batch.add(message.activity_id))
        return batch

    async def _fail(
        self,
        task: service_pb2.PollWorkflowTaskResponse,
        log: Any,
        cause: WorkflowTaskFailedCause,
        failure: Failure,
    ) -> None:
        request = service_pb2.FailWorkflowTaskRequest(
            namespace=self.namespace,
            task_token=task.task_token,
            cause=str(cause),
            failure=wire.failure_to_proto(failure),
            identity=self.identity,
        )
        try:
            await self.connection.call("FailWorkflowTask", request)
        except _grpc.NotFoundError as exc:
            log.info("workflow task failure not recorded: the task is stale", detail=str(exc))
        except Exception as exc:
            log.error("could not report the workflow task failure", error=str(exc))
