"""``WorkflowDefinition`` and ``ActivityDefinition``: what the decorators record about a function.

Built and validated once, at decoration time: the registered name, the function, its parameter
and return type hints (used to rebuild dataclasses and pydantic models from payloads) and, for
activities, the default options.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from typing import Any

from chronicle.history.values import RetryPolicy

__all__ = [
    "CANCELLATION_TYPES",
    "ActivityDefinition",
    "ActivityOptions",
    "WorkflowDefinition",
    "activity_definition",
    "workflow_definition",
]

WORKFLOW_ATTR = "__chronicle_workflow__"
"""Attribute under which ``@workflow`` stores the ``WorkflowDefinition`` on the function."""

CANCELLATION_TYPES = ("try_cancel", "wait_cancellation_completed", "abandon")
"""What cancelling the awaiting code does to an activity: request cancellation and raise at once,
request it and wait for the activity to acknowledge, or raise at once without asking."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityOptions:
    """How an activity is scheduled. ``None``: not set here (a merge or the server decides)."""

    task_queue: str | None = None
    start_to_close_timeout: timedelta | None = None
    schedule_to_close_timeout: timedelta | None = None
    schedule_to_start_timeout: timedelta | None = None
    heartbeat_timeout: timedelta | None = None
    retry: RetryPolicy | None = None
    cancellation_type: str = "try_cancel"

    def __post_init__(self) -> None:
        if self.cancellation_type not in CANCELLATION_TYPES:
            raise ValueError(
                f"cancellation_type must be one of {', '.join(CANCELLATION_TYPES)}, "
                f"got {self.cancellation_type!r}"
            )
        for name in (
            "start_to_close_timeout",
            "schedule_to_close_timeout",
            "schedule_to_start_timeout",
            "heartbeat_timeout",
        ):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, timedelta) or value <= timedelta(0)):
                raise ValueError(f"{name} must be a positive timedelta, got {value!r}")

    def merged(self, other: ActivityOptions) -> ActivityOptions:
        """These options overridden by every field that ``other`` sets (non-``None``; a
        ``cancellation_type`` other than the default)."""
        changes: dict[str, Any] = {}
        for f in fields(other):
            value = getattr(other, f.name)
            if f.name == "cancellation_type":
                if value != "try_cancel":
                    changes[f.name] = value
            elif value is not None:
                changes[f.name] = value
        return replace(self, **changes)


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityDefinition:
    """A decorated activity: registered ``name``, the plain function and its default options."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    options: ActivityOptions
    arg_hints: tuple[Any, ...]
    return_hint: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowDefinition:
    """A decorated workflow: registered ``name`` (its workflow type) and the async function."""

    name: str
    fn: Callable[..., Any]
    arg_hints: tuple[Any, ...]
    return_hint: Any


def hints_of(fn: Callable[..., Any]) -> tuple[tuple[Any, ...], Any]:
    """Positional parameter hints and the return hint of ``fn`` (``Any`` where unknown).

    Unresolvable string annotations (a forward reference to a local class) become ``Any``.
    """
    try:
        resolved = typing.get_type_hints(fn)
    except Exception:  # a NameError from a forward ref, or anything odd in annotations
        resolved = {
            k: v for k, v in getattr(fn, "__annotations__", {}).items() if not isinstance(v, str)
        }
    signature = inspect.signature(fn)
    args: list[Any] = []
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            args.append(resolved.get(parameter.name, Any))
        elif parameter.kind is parameter.VAR_POSITIONAL:
            break
        elif parameter.kind is parameter.KEYWORD_ONLY and parameter.default is parameter.empty:
            raise TypeError(
                f"{fn.__qualname__}: keyword-only parameter {parameter.name!r} needs a default "
                "(arguments are passed by position)"
            )
    return tuple(args), resolved.get("return", Any)


def make_workflow_definition(fn: Callable[..., Any], name: str | None) -> WorkflowDefinition:
    """Validate ``fn`` as a workflow and describe it; ``TypeError`` if it is not ``async def``."""
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"@workflow needs an async function; {fn!r} is not one")
    arg_hints, return_hint = hints_of(fn)
    return WorkflowDefinition(
        name=name or fn.__name__, fn=fn, arg_hints=arg_hints, return_hint=return_hint
    )


def make_activity_definition(
    fn: Callable[..., Any], name: str | None, options: ActivityOptions
) -> ActivityDefinition:
    """Validate ``fn`` as an activity and describe it (sync ``def`` functions are allowed)."""
    if not callable(fn):
        raise TypeError(f"@activity needs a function; got {fn!r}")
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        raise TypeError(f"@activity cannot decorate a generator function ({fn.__qualname__})")
    arg_hints, return_hint = hints_of(fn)
    return ActivityDefinition(
        name=name or fn.__name__,
        fn=fn,
        is_async=inspect.iscoroutinefunction(fn),
        options=options,
        arg_hints=arg_hints,
        return_hint=return_hint,
    )


def workflow_definition(obj: object) -> WorkflowDefinition:
    """The ``WorkflowDefinition`` of a ``@workflow`` function; ``TypeError`` for anything else."""
    if isinstance(obj, WorkflowDefinition):
        return obj
    definition = getattr(obj, WORKFLOW_ATTR, None)
    if isinstance(definition, WorkflowDefinition):
        return definition
    raise TypeError(f"{_describe(obj)} is not decorated with @workflow")


def activity_definition(obj: object) -> ActivityDefinition:
    """The ``ActivityDefinition`` of an ``@activity`` function; ``TypeError`` for anything else."""
    if isinstance(obj, ActivityDefinition):
        return obj
    definition = getattr(obj, "definition", None)
    if isinstance(definition, ActivityDefinition):
        return definition
    raise TypeError(f"{_describe(obj)} is not decorated with @activity")


def _describe(obj: object) -> str:
    return getattr(obj, "__qualname__", None) or repr(obj)
