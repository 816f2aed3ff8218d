"""``@workflow`` and the in-workflow API: ``workflow.sleep``, ``workflow.execute_activity`` …

``workflow`` is one callable namespace object::

    @workflow                                  # or @workflow(name="order-v2")
    async def order(order_id: str) -> str:
        receipt = await charge_card(order_id)  # an @activity: scheduled durably
        await workflow.sleep(timedelta(hours=1))
        return receipt

Every function here delegates to the runtime of the running workflow (``_runtime.current()``)
and raises ``RuntimeError`` outside workflow code. Plain ``asyncio`` works too and stays
deterministic: ``asyncio.sleep``, ``asyncio.timeout`` and ``asyncio.wait_for`` become durable
timers, ``asyncio.gather`` runs activities in parallel.
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
import uuid as _uuid
from collections.abc import Callable, Coroutine, MutableMapping
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar, overload

from chronicle.history.values import RetryPolicy
from chronicle.sdk import _runtime
from chronicle.sdk._child import ChildWorkflowHandle
from chronicle.sdk._definitions import (
    WORKFLOW_ATTR,
    ActivityOptions,
    activity_definition,
    make_workflow_definition,
    workflow_definition,
)
from chronicle.sdk._info import WorkflowInfo
from chronicle.sdk.activity import ActivityFunction

__all__ = [
    "ChildWorkflowHandle",
    "continue_as_new",
    "deprecate_patch",
    "execute_activity",
    "execute_child",
    "execute_local_activity",
    "info",
    "is_replaying",
    "logger",
    "now",
    "on_query",
    "on_signal",
    "on_update",
    "patched",
    "random",
    "sleep",
    "start_child",
    "uuid4",
    "wait_condition",
    "wait_signal",
    "workflow",
]

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")


PARENT_CLOSE_POLICIES = ("terminate", "request_cancel", "abandon")
"""What happens to a running child when its parent closes."""


def _positive(what: str, duration: timedelta | float) -> float:
    """``duration`` in seconds; ``ValueError`` naming ``what`` unless it is a positive number."""
    if isinstance(duration, bool) or not isinstance(duration, timedelta | int | float):
        raise TypeError(f"{what} must be a timedelta or a number of seconds, got {duration!r}")
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
    if not seconds > 0:  # also rejects NaN
        raise ValueError(f"{what} must be positive, got {seconds:g} s")
    return seconds


def _timeout(what: str, timeout: timedelta | float | None) -> timedelta | None:
    if timeout is None:
        return None
    return timedelta(seconds=_positive(what, timeout))


def sleep(duration: timedelta | float) -> Coroutine[Any, Any, None]:
    """Sleep durably: a timer recorded in the history (``duration`` in seconds if a number).

    A zero or negative duration raises ``ValueError`` at the call (nothing is recorded).
    """
    _runtime.current()
    return asyncio.sleep(_positive("workflow.sleep duration", duration))


@overload
def execute_activity(  # async first: its T is a Coroutine
    activity: ActivityFunction[..., Coroutine[Any, Any, R]],
    *args: Any,
    task_queue: str | None = None,
    start_to_close_timeout: timedelta | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    schedule_to_start_timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    retry: RetryPolicy | None = None,
    cancellation_type: str = "try_cancel",
) -> Coroutine[Any, Any, R]: ...


@overload
def execute_activity(
    activity: ActivityFunction[..., R],
    *args: Any,
    task_queue: str | None = None,
    start_to_close_timeout: timedelta | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    schedule_to_start_timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    retry: RetryPolicy | None = None,
    cancellation_type: str = "try_cancel",
) -> Coroutine[Any, Any, R]: ...


@overload
def execute_activity(
    activity: str,
    *args: Any,
    task_queue: str | None = None,
    start_to_close_timeout: timedelta | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    schedule_to_start_timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    retry: RetryPolicy | None = None,
    cancellation_type: str = "try_cancel",
) -> Coroutine[Any, Any, Any]: ...


def execute_activity(
    activity: Any,
    *args: Any,
    task_queue: str | None = None,
    start_to_close_timeout: timedelta | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    schedule_to_start_timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    retry: RetryPolicy | None = None,
    cancellation_type: str = "try_cancel",
) -> Coroutine[Any, Any, Any]:
    """Schedule an activity (an ``@activity`` function or a type name) now; await its result.

    Options given here override the decorator's. Failures raise ``ActivityError``.
    """
    runtime = _runtime.current()
    override = ActivityOptions(
        task_queue=task_queue,
        start_to_close_timeout=start_to_close_timeout,
        schedule_to_close_timeout=schedule_to_close_timeout,
        schedule_to_start_timeout=schedule_to_start_timeout,
        heartbeat_timeout=heartbeat_timeout,
        retry=retry,
        cancellation_type=cancellation_type,
    )
    if isinstance(activity, str):
        return runtime.start_activity(activity, args, override, Any)
    definition = activity_definition(activity)
    return runtime.start_activity(
        definition.name, args, definition.options.merged(override), definition.return_hint
    )


@overload
def execute_local_activity(  # async first: its T is a Coroutine
    activity: ActivityFunction[..., Coroutine[Any, Any, R]],
    *args: Any,
    start_to_close_timeout: timedelta | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    retry: RetryPolicy | None = None,
) -> Coroutine[Any, Any, R]: ...


@overload
def execute_local_activity(
    activity: ActivityFunction[..., R] | str,
    *args: Any,
    start_to_close_timeout: timedelta | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    retry: RetryPolicy | None = None,
) -> Coroutine[Any, Any, R]: ...


def execute_local_activity(
    activity: Any,
    *args: Any,
    start_to_close_timeout: timedelta | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    retry: RetryPolicy | None = None,
) -> Coroutine[Any, Any, Any]:
    """Run a short activity in this workflow's worker, without a task queue round trip.

    The outcome is recorded as one ``MarkerRecorded`` (whatever the number of attempts); the
    retry policy and timeouts apply as for ``execute_activity``, in the worker, within the
    workflow task (keep local activities short: the workflow task timeout still applies).
    ``activity`` is an ``@activity`` function or the name of one registered on the worker.
    Failures raise ``ActivityError``.
    """
    runtime = _runtime.current()
    override = ActivityOptions(
        start_to_close_timeout=start_to_close_timeout,
        schedule_to_close_timeout=schedule_to_close_timeout,
        retry=retry,
    )
    if isinstance(activity, str):
        return runtime.start_local_activity(activity, None, args, override, Any)
    definition = activity_definition(activity)
    return runtime.start_local_activity(
        definition.name,
        definition,
        args,
        definition.options.merged(override),
        definition.return_hint,
    )


def execute_child(
    child: Any,
    *args: Any,
    id: str | None = None,
    task_queue: str | None = None,
    execution_timeout: timedelta | None = None,
    run_timeout: timedelta | None = None,
    parent_close_policy: str = "terminate",
    retry: RetryPolicy | None = None,
) -> Coroutine[Any, Any, Any]:
    """Start a child workflow (a ``@workflow`` function or a type name) now; await its result.

    ``id`` defaults to ``"<parent id>-child-<seq>"``; failures raise ``ChildWorkflowError``.
    ``parent_close_policy``: ``"terminate"`` (default), ``"request_cancel"`` or ``"abandon"``.
    ``retry``: the child's own retry policy, as ``Client.start``'s: a failed run of the child is
    retried as a new run, and the parent sees only the last run's outcome.
    """
    return _start_child(
        child, args, id, task_queue, execution_timeout, run_timeout, parent_close_policy, retry
    ).result()


def start_child(
    child: Any,
    *args: Any,
    id: str | None = None,
    task_queue: str | None = None,
    execution_timeout: timedelta | None = None,
    run_timeout: timedelta | None = None,
    parent_close_policy: str = "terminate",
    retry: RetryPolicy | None = None,
) -> Coroutine[Any, Any, ChildWorkflowHandle[Any]]:
    """Start a child workflow now; await the ``ChildWorkflowHandle`` once the child has started.

    ``await handle`` (or ``handle.result()``) gives its result, ``handle.signal(name, *args)``
    signals it. ``ChildWorkflowError`` if it cannot start (its id is in use). Options as
    ``execute_child``.
    """
    handle = _start_child(
        child, args, id, task_queue, execution_timeout, run_timeout, parent_close_policy, retry
    )
    return handle.wait_started()


def _start_child(
    child: Any,
    args: tuple[Any, ...],
    workflow_id: str | None,
    task_queue: str | None,
    execution_timeout: timedelta | None,
    run_timeout: timedelta | None,
    parent_close_policy: str,
    retry: RetryPolicy | None,
) -> ChildWorkflowHandle[Any]:
    runtime = _runtime.current()
    if parent_close_policy not in PARENT_CLOSE_POLICIES:
        raise ValueError(
            f"unknown parent_close_policy {parent_close_policy!r} "
            f"(known: {', '.join(PARENT_CLOSE_POLICIES)})"
        )
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry must be a RetryPolicy or None, got {type(retry).__name__}")
    if isinstance(child, str):
        name, hint = child, Any
    else:
        definition = workflow_definition(child)
        name, hint = definition.name, definition.return_hint
    return runtime.start_child(
        name,
        args,
        workflow_id=workflow_id,
        task_queue=task_queue,
        execution_timeout=_timeout("execution_timeout", execution_timeout),
        run_timeout=_timeout("run_timeout", run_timeout),
        parent_close_policy=parent_close_policy,
        retry_policy=retry,
        return_hint=hint,
    )


def wait_condition(
    predicate: Callable[[], bool], timeout: timedelta | float | None = None
) -> Coroutine[Any, Any, None]:
    """Resume once ``predicate()`` is true (re-checked after every step); ``TimeoutError`` after
    ``timeout`` (a durable timer; zero or negative: ``ValueError`` at the call)."""
    runtime = _runtime.current()
    return runtime.wait_condition(predicate, _timeout("wait_condition timeout", timeout))


def wait_signal(name: str, timeout: timedelta | float | None = None) -> Coroutine[Any, Any, Any]:
    """The next signal ``name`` in arrival order (buffered until consumed): its single argument,
    ``None`` for none, a tuple for several. ``TimeoutError`` after ``timeout`` (zero or
    negative: ``ValueError`` at the call)."""
    runtime = _runtime.current()
    return runtime.wait_signal(name, _timeout("wait_signal timeout", timeout))


def on_signal(name: str, handler: Callable[..., Any] | None) -> None:
    """Call ``handler(*args)`` (sync or async) for each signal ``name``; ``None`` removes it.

    Signals that arrived before registration are delivered at once, in order.
    """
    _runtime.current().set_signal_handler(name, handler)


def on_query(name: str, handler: Callable[..., Any] | None) -> None:
    """Answer query ``name`` with ``handler(*args)``: synchronous and read-only."""
    _runtime.current().set_query_handler(name, handler)


def on_update(
    name: str, handler: Callable[..., Any] | None, validator: Callable[..., Any] | None = None
) -> None:
    """Handle update ``name`` (``handle.update(name, *args)``) with ``handler(*args)``.

    The handler may be async and await activities, timers …; its return value is the caller's
    result, and an ``ApplicationError`` it raises is the caller's error (the workflow goes on).
    ``validator(*args)`` (synchronous, read-only, like a query) runs before anything is recorded:
    if it raises, the update is rejected and leaves no trace in the history. ``None`` removes the
    handler.
    """
    _runtime.current().set_update_handler(name, handler, validator)


def now() -> datetime:
    """Workflow time (UTC): the start time of the current workflow task, same on replay."""
    return _runtime.current().now()


def random() -> _random.Random:
    """The run's ``random.Random``, seeded from the history: same draws on replay."""
    return _runtime.current().random()


def uuid4() -> _uuid.UUID:
    """A random UUID drawn from ``random()``: same value on replay."""
    return _runtime.current().uuid4()


def info() -> WorkflowInfo:
    """The run: namespace, workflow id, run id, type, task queue, attempt."""
    return _runtime.current().info()


def is_replaying() -> bool:
    """True while the code re-runs an already recorded workflow task."""
    return _runtime.current().is_replaying()


def patched(patch_id: str) -> bool:
    """True on runs that reach this point after the change ``patch_id`` shipped; False when
    replaying a history recorded before it. Keep both branches until old runs are closed."""
    return _runtime.current().patched(patch_id)


def deprecate_patch(patch_id: str) -> None:
    """Step two of removing a patch: the code keeps only the ``patched(patch_id)`` branch.

    Deploy it once no open run can still take the old branch (none recorded before the patch):
    a history with the patch marker replays (the marker is consumed), while one from before the
    patch now runs the new branch and fails with ``NondeterminismError`` where they differ. New
    runs still record the marker, so workers of the previous deployment (``if patched(...)``)
    replay them during a rolling deploy. Finally remove the call: a recorded patch marker that
    the code no longer asks for is skipped on replay.
    """
    _runtime.current().deprecate_patch(patch_id)


def continue_as_new(
    *args: Any, workflow_type: str | None = None, task_queue: str | None = None
) -> NoReturn:
    """Close this run and start a fresh run of the same workflow id with ``args``."""
    _runtime.current().continue_as_new(args, workflow_type, task_queue)


class _WorkflowLogger(logging.LoggerAdapter[logging.Logger]):
    """Logs with the run's ids attached, and drops records while replaying (log once)."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """Attach ``workflow_id``, ``run_id`` and ``workflow_type`` to the record's extras."""
        runtime = _runtime.current_or_none()
        if runtime is not None:
            run = runtime.info()
            extra = dict(kwargs.get("extra") or {})
            extra.update(
                workflow_id=run.workflow_id, run_id=run.run_id, workflow_type=run.workflow_type
            )
            kwargs["extra"] = extra
        return msg, kwargs

    def isEnabledFor(self, level: int) -> bool:
        """False while replaying, so records are not emitted twice."""
        runtime = _runtime.current_or_none()
        if runtime is not None and runtime.is_replaying():
            return False
        return self.logger.isEnabledFor(level)


logger = _WorkflowLogger(logging.getLogger("chronicle.workflow"), {})
"""Workflow logger: replay-aware (no duplicates), records carry workflow and run ids."""


class _WorkflowNamespace:
    """``@workflow`` / ``@workflow(name=...)``, plus the in-workflow API as attributes."""

    def __init__(self) -> None:
        self.sleep = sleep
        self.execute_activity = execute_activity
        self.execute_local_activity = execute_local_activity
        self.execute_child = execute_child
        self.start_child = start_child
        self.wait_condition = wait_condition
        self.wait_signal = wait_signal
        self.on_signal = on_signal
        self.on_query = on_query
        self.on_update = on_update
        self.now = now
        self.random = random
        self.uuid4 = uuid4
        self.info = info
        self.is_replaying = is_replaying
        self.patched = patched
        self.deprecate_patch = deprecate_patch
        self.continue_as_new = continue_as_new
        self.logger = logger

    @overload
    def __call__(self, fn: F, /) -> F: ...

    @overload
    def __call__(self, /, *, name: str | None = None) -> Callable[[F], F]: ...

    def __call__(self, fn: Any = None, /, *, name: str | None = None) -> Any:
        """Mark an async function as a workflow (type name: ``name`` or the function name).

        Returns the same function, carrying its ``WorkflowDefinition``.
        """

        def decorate(function: F) -> F:
            setattr(function, WORKFLOW_ATTR, make_workflow_definition(function, name))
            return function

        return decorate if fn is None else decorate(fn)


workflow = _WorkflowNamespace()
"""The workflow decorator and in-workflow API (``workflow.sleep``, ``workflow.now()`` …)."""
