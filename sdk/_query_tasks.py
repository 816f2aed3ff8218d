"""Query tasks: a query, or the validation of an update, answered by the workflow's code.

A query-only task (``query`` set, no events) is answered from the run's cached instance when
no workflow task is using it (marked busy meanwhile, so a workflow task arriving concurrently
replays instead of sharing it), else from a temporary instance replaying the history up to its
last ``WorkflowTaskStarted``. The handler runs in the workflow thread pool under the deadlock
timeout; one that overruns leaves its thread inside the instance, so the instance is dropped
as after a deadlock. The answer, or the failure, goes back with ``RespondQueryTask``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from chronicle.history import wire
from chronicle.history.values import Payload
from chronicle.protos.v1 import service_pb2
from chronicle.sdk import _grpc
from chronicle.sdk._activator import Activator, TaskFailure
from chronicle.sdk._definitions import WorkflowDefinition
from chronicle.sdk._instance import WorkflowInstance
from chronicle.sdk._instance_lookup import InstanceLookup, with_first_task
from chronicle.sdk._sticky_cache import StickyCache
from chronicle.sdk._workflow_threads import WorkflowThreads
from chronicle.sdk.errors import exception_to_failure

__all__ = ["QueryTasks"]


class QueryTasks:
    """Answers the query-only tasks of one workflow worker (see the module docstring)."""

    def __init__(
        self,
        *,
        namespace: str,
        workflows: Mapping[str, WorkflowDefinition],
        cache: StickyCache,
        instances: InstanceLookup,
        activator: Activator,
        executor: WorkflowThreads,
        deadlock_timeout: float | None,
        stuck: Callable[[WorkflowInstance], None],
    ) -> None:
        self._namespace = namespace
        self._workflows = workflows
        self._cache = cache
        self._instances = instances
        self._activator = activator
        self._executor = executor
        self._deadlock_timeout = deadlock_timeout
        self._stuck = stuck

    async def answer(
        self, connection: _grpc.Connection, task: service_pb2.PollWorkflowTaskResponse, log: Any
    ) -> None:
        """Answer a query-only task (a query, or the validation of an update) from the cached
        instance, or from a replay of the history in a temporary instance."""
        run_id = task.workflow_execution.run_id
        name = task.query.query_name
        what = "update validation" if task.query.validate_update else "query"
        request = service_pb2.RespondQueryTaskRequest(
            namespace=self._namespace, task_token=task.task_token
        )
        definition = self._workflows.get(task.workflow_type)
        temporary: WorkflowInstance | None = None
        claimed = run_id not in self._cache.busy and run_id in self._cache
        if claimed:  # a workflow task arriving meanwhile replays instead of sharing the instance
            self._cache.busy.add(run_id)
        try:
            instance = self._cache.get(run_id) if claimed else None
            if instance is None:
                if definition is None:
                    raise LookupError(f"workflow type {task.workflow_type!r} is not served here")
                temporary, history = await self._instances.replayed(
                    connection, task, definition, [], log
                )
                await self._activator.activate(temporary, with_first_task(history))
                instance = temporary
            args = wire.payloads_from_proto(task.query.args)
            loop = asyncio.get_running_loop()
            timeout = self._deadlock_timeout or 10.0
            handler: Callable[[str, Sequence[Payload]], Payload | None] = (
                instance.validate_update if task.query.validate_update else instance.query
            )
            try:
                answer = await asyncio.wait_for(
                    loop.run_in_executor(self._executor, handler, name, args), timeout
                )
            except TimeoutError:
                # Its thread is still inside the instance (and restores the instance's state
                # when it returns): no task may use it again, and closing it would block too.
                self._stuck(instance)
                if instance is temporary:
                    temporary = None
                raise TimeoutError(
                    f"the {what} handler {name!r} did not return within {timeout:g} s "
                    "(blocking code?); the cached instance was dropped"
                ) from None
            if answer is not None:  # a query's answer (an update validation returns None)
                request.result.CopyFrom(wire.payload_to_proto(answer))
        except Exception as exc:
            log.info(f"{what} failed", name=name, error=str(exc))
            failure = exc.failure if isinstance(exc, TaskFailure) else exception_to_failure(exc)
            request.failure.CopyFrom(wire.failure_to_proto(failure))
        finally:
            if claimed:
                self._cache.busy.discard(run_id)
            if temporary is not None:
                await self._cache.close(temporary)
        try:
            await connection.call("RespondQueryTask", request)
        except Exception as exc:
            log.warning(f"could not answer the {what} task", error=str(exc))
