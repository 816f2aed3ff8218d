"""Which ``WorkflowInstance`` a workflow task runs on: the cached one, a fresh one, or a replay.

A task whose events start at event 1 builds a fresh instance; one whose events continue right
after a cached instance's ``last_event_id`` feeds that instance (``_sticky_cache.py``); anything
else (a cache miss after eviction or restart) fetches the whole history with
``GetWorkflowHistory`` and replays it into a fresh instance. The connection is passed to each
call, never kept: a test swaps the worker's connection after construction.
"""

from __future__ import annotations

from typing import Any

from chronicle.history.events import Event, WorkflowStarted, WorkflowTaskStarted
from chronicle.protos.v1 import service_pb2
from chronicle.sdk import _grpc
from chronicle.sdk._definitions import WorkflowDefinition
from chronicle.sdk._guards import GuardMode
from chronicle.sdk._history_pages import fetch_history
from chronicle.sdk._info import WorkflowInfo
from chronicle.sdk._instance import WorkflowInstance
from chronicle.sdk._sticky_cache import StickyCache

__all__ = ["InstanceLookup", "with_first_task"]


class InstanceLookup:
    """Finds or builds the instance of a workflow task (see the module docstring)."""

    def __init__(
        self, cache: StickyCache, namespace: str, task_queue: str, guard_mode: GuardMode
    ) -> None:
        self._cache = cache
        self._namespace = namespace
        self._task_queue = task_queue
        self._guard_mode: GuardMode = guard_mode

    async def for_task(
        self,
        connection: _grpc.Connection,
        task: service_pb2.PollWorkflowTaskResponse,
        definition: WorkflowDefinition,
        events: list[Event],
        shared: bool,
        log: Any,
    ) -> tuple[WorkflowInstance, list[Event]]:
        """The instance ``task`` runs on and the events to feed it (``shared``: the run is not
        busy elsewhere, so its cached instance may be used)."""
        run_id = task.workflow_execution.run_id
        cached = self._cache.get(run_id) if shared else None
        if events and events[0].id == 1:
            if cached is not None:
                await self._cache.evict(run_id)
            return self._new_instance(task, definition, events), events
        if cached is not None and events and cached.last_event_id == events[0].id - 1:
            self._cache.touch(run_id)
            return cached, events
        if cached is not None:
            log.info(
                "cached instance does not continue these events; replaying",
                cached_last_event_id=cached.last_event_id,
                first_event_id=events[0].id if events else None,
            )
            await self._cache.evict(run_id)
        return await self.replayed(connection, task, definition, events, log)

    async def replayed(
        self,
        connection: _grpc.Connection,
        task: service_pb2.PollWorkflowTaskResponse,
        definition: WorkflowDefinition,
        events: list[Event],
        log: Any,
    ) -> tuple[WorkflowInstance, list[Event]]:
        """A fresh instance and the full history up to this task's ``WorkflowTaskStarted``."""
        execution = task.workflow_execution
        full = await fetch_history(
            connection, self._namespace, execution.workflow_id, execution.run_id
        )
        if events:
            last = events[-1].id
        else:
            started = [e.id for e in full if isinstance(e.attributes, WorkflowTaskStarted)]
            last = started[-1] if started else (full[-1].id if full else 0)
        history = [e for e in full if e.id <= last]
        log.debug("fetched history for replay", events=len(history))
        return self._new_instance(task, definition, history), history

    def _new_instance(
        self,
        task: service_pb2.PollWorkflowTaskResponse,
        definition: WorkflowDefinition,
        events: list[Event],
    ) -> WorkflowInstance:
        started = events[0].attributes if events else None
        attempt = started.attempt if isinstance(started, WorkflowStarted) else 1
        queue = started.task_queue if isinstance(started, WorkflowStarted) else ""
        info = WorkflowInfo(
            namespace=self._namespace,
            workflow_id=task.workflow_execution.workflow_id,
            run_id=task.workflow_execution.run_id,
            workflow_type=task.workflow_type,
            task_queue=queue or task.task_queue or self._task_queue,
            attempt=attempt,
        )
        instance = WorkflowInstance(definition, info)
        instance.guard_mode = self._guard_mode
        return instance


def with_first_task(history: list[Event]) -> list[Event]:
    """``history``, plus a stand-in ``WorkflowTaskStarted`` when no task ever started, so that a
    query or an update validation sees the handlers the workflow registers when it begins."""
    if not history or any(isinstance(e.attributes, WorkflowTaskStarted) for e in history):
        return history
    last = history[-1]
    started = WorkflowTaskStarted(scheduled_event_id=last.id, identity="query")
    return [*history, Event(id=last.id + 1, time=last.time, attributes=started)]
