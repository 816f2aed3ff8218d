"""``@activity`` and the in-activity API (``activity.info()``, ``activity.heartbeat()`` …).

``activity`` is one callable namespace object::

    @activity                                   # bare form: default options
    async def ship(order_id: str) -> str: ...

    @activity(start_to_close_timeout=timedelta(seconds=30), retry=RetryPolicy(maximum_attempts=5))
    def resize(path: str) -> str: ...           # sync activities run in the worker's thread pool

The decorator returns an ``ActivityFunction``. Called inside a workflow it schedules the activity
(the result is awaitable); called anywhere else it runs the plain function, so activities
unit-test like ordinary functions. Inside a running activity, ``activity.info()``,
``activity.heartbeat(*details)``, ``activity.is_cancelled()`` and
``activity.raise_complete_async()`` read the context the activity worker installed with
``set_activity_context``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, NoReturn, ParamSpec, TypeVar, overload

from chronicle.history.values import RetryPolicy
from chronicle.sdk import _runtime
from chronicle.sdk._definitions import (
    ActivityDefinition,
    ActivityOptions,
    make_activity_definition,
)
from chronicle.sdk._info import ActivityInfo
from chronicle.sdk.errors import CompleteAsyncError

__all__ = [
    "ActivityContext",
    "ActivityFunction",
    "activity",
    "heartbeat",
    "in_activity",
    "info",
    "is_cancelled",
    "raise_complete_async",
    "reset_activity_context",
    "set_activity_context",
]

P = ParamSpec("P")
T = TypeVar("T")


class ActivityFunction(Generic[P, T]):
    """An ``@activity`` function: schedules the activity in a workflow, runs it plainly elsewhere.

    In workflow code, ``await fn(*args)`` schedules the activity at the call (so the order of
    calls, not of awaits, numbers them) and returns its recorded result; failures raise
    ``ActivityError``. Sync activities are scheduled the same way, but for type checkers call
    them in workflows as ``await workflow.execute_activity(fn, *args)`` (typed by ``fn``).
    """

    def __init__(self, definition: ActivityDefinition) -> None:
        self._definition = definition
        self._signature = inspect.signature(definition.fn)
        functools.update_wrapper(self, definition.fn)

    @property
    def definition(self) -> ActivityDefinition:
        """The activity's definition (name, function, options including ``with_options``)."""
        return self._definition

    @property
    def name(self) -> str:
        """The activity type name the worker registers and the workflow schedules."""
        return self._definition.name

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        """Schedule the activity (in workflow code) or run the plain function (elsewhere)."""
        runtime = _runtime.current_or_none()
        if runtime is None:
            result: T = self._definition.fn(*args, **kwargs)
            return result
        positional = self._positional(args, kwargs)
        coroutine: Any = runtime.start_activity(
            self._definition.name,
            positional,
            self._definition.options,
            self._definition.return_hint,
        )
        return coroutine  # type: ignore[no-any-return]

    def _positional(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        if not kwargs:
            return list(args)
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"activity {self.name}: {exc}") from exc
        if bound.kwargs:
            raise TypeError(
                f"activity {self.name}: keyword-only arguments cannot be passed to an activity "
                f"({', '.join(bound.kwargs)})"
            )
        return list(bound.args)

    def with_options(
        self,
        *,
        task_queue: str | None = None,
        start_to_close_timeout: timedelta | None = None,
        schedule_to_close_timeout: timedelta | None = None,
        schedule_to_start_timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        retry: RetryPolicy | None = None,
        cancellation_type: str = "try_cancel",
    ) -> ActivityFunction[P, T]:
        """A copy whose calls use these options on top of the decorator's."""
        override = ActivityOptions(
            task_queue=task_queue,
            start_to_close_timeout=start_to_close_timeout,
            schedule_to_close_timeout=schedule_to_close_timeout,
            schedule_to_start_timeout=schedule_to_start_timeout,
            heartbeat_timeout=heartbeat_timeout,
            retry=retry,
            cancellation_type=cancellation_type,
        )
        definition = self._definition
        merged = ActivityDefinition(
            name=definition.name,
            fn=definition.fn,
            is_async=definition.is_async,
            options=definition.options.merged(override),
            arg_hints=definition.arg_hints,
            return_hint=definition.return_hint,
        )
        return ActivityFunction(merged)

    def __repr__(self) -> str:
        return f"<ActivityFunction {self.name}>"


# ---------------------------------------------------------------- in-activity context


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityContext:
    """What the activity worker installs around one attempt: the info, a heartbeat sink (called
    with the encoded-later details tuple) and an event set once cancellation is requested."""

    info: ActivityInfo
    heartbeat: Callable[[tuple[Any, ...]], None]
    cancelled: threading.Event


_ActivityContext = ActivityContext
_context: contextvars.ContextVar[ActivityContext | None] = contextvars.ContextVar(
    "chronicle_activity_context", default=None
)


def set_activity_context(ctx: ActivityContext) -> contextvars.Token[ActivityContext | None]:
    """Install ``ctx`` for the current context (the worker, around each attempt).

    Sync activities run in a thread: set it *in* that thread, or run the function with
    ``contextvars.copy_context().run`` (``loop.run_in_executor`` does not copy the context).
    """
    return _context.set(ctx)


def reset_activity_context(token: contextvars.Token[ActivityContext | None]) -> None:
    """Undo ``set_activity_context``."""
    _context.reset(token)


async def run_with_context(
    definition: ActivityDefinition,
    args: Sequence[Any],
    context: ActivityContext,
    executor: Executor,
) -> Any:
    """Run one attempt of ``definition`` under ``context``: an async function on this loop, a
    sync one in ``executor`` (with the context set in that thread). Used by the activity worker
    and by local activities alike."""
    if definition.is_async:
        token = set_activity_context(context)
        try:
            return await definition.fn(*args)
        finally:
            reset_activity_context(token)

    def run() -> Any:
        token = set_activity_context(context)
        try:
            return definition.fn(*args)
        finally:
            reset_activity_context(token)

    ctx = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(executor, ctx.run, run)


def _current() -> ActivityContext:
    ctx = _context.get()
    if ctx is None:
        raise RuntimeError(
            "not in an activity: activity.info()/heartbeat() need a running "
            "activity (a worker sets the context)"
        )
    return ctx


def in_activity() -> bool:
    """True inside an activity run by a worker."""
    return _context.get() is not None


def info() -> ActivityInfo:
    """The running activity's ``ActivityInfo`` (attempt, ids, task token, heartbeat details)."""
    return _current().info


def heartbeat(*details: Any) -> None:
    """Report progress (``details`` are kept for the next attempt's ``info().heartbeat_details``).

    Raises ``asyncio.CancelledError`` once cancellation was requested, so sync activities stop
    at their next heartbeat.
    """
    ctx = _current()
    ctx.heartbeat(details)
    if ctx.cancelled.is_set():
        raise asyncio.CancelledError(f"activity {ctx.info.activity_id} was cancelled")


def is_cancelled() -> bool:
    """True once the workflow (or a timeout) asked this activity to stop."""
    return _current().cancelled.is_set()


def raise_complete_async() -> NoReturn:
    """Leave the activity open: it is completed later via ``client.complete_activity(token, …)``."""
    _current()
    raise CompleteAsyncError("activity will be completed asynchronously")


# ---------------------------------------------------------------- the decorator object


class _ActivityNamespace:
    """``@activity`` / ``@activity(...)``, plus the in-activity functions as attributes."""

    def __init__(self) -> None:
        self.info = info
        self.heartbeat = heartbeat
        self.is_cancelled = is_cancelled
        self.raise_complete_async = raise_complete_async
        self.in_activity = in_activity

    @overload
    def __call__(self, fn: Callable[P, T], /) -> ActivityFunction[P, T]: ...

    @overload
    def __call__(
        self,
        /,
        *,
        name: str | None = None,
        task_queue: str | None = None,
        start_to_close_timeout: timedelta | None = None,
        schedule_to_close_timeout: timedelta | None = None,
        schedule_to_start_timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        retry: RetryPolicy | None = None,
        cancellation_type: str = "try_cancel",
    ) -> Callable[[Callable[P, T]], ActivityFunction[P, T]]: ...

    def __call__(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        task_queue: str | None = None,
        start_to_close_timeout: timedelta | None = None,
        schedule_to_close_timeout: timedelta | None = None,
        schedule_to_start_timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        retry: RetryPolicy | None = None,
        cancellation_type: str = "try_cancel",
    ) -> Any:
        """Decorate an activity function (bare, or with a name and default options)."""
        options = ActivityOptions(
            task_queue=task_queue,
            start_to_close_timeout=start_to_close_timeout,
            schedule_to_close_timeout=schedule_to_close_timeout,
            schedule_to_start_timeout=schedule_to_start_timeout,
            heartbeat_timeout=heartbeat_timeout,
            retry=retry,
            cancellation_type=cancellation_type,
        )

        def decorate(function: Callable[..., Any]) -> ActivityFunction[..., Any]:
            return ActivityFunction(make_activity_definition(function, name, options))

        return decorate if fn is None else decorate(fn)


activity = _ActivityNamespace()
"""The activity decorator and in-activity API (``activity.info()``, ``activity.heartbeat()`` …)."""
