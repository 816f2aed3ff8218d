"""The contract between ``workflow.*`` (the user-facing API) and the instance that runs the code.

``workflow.py`` talks only to a ``WorkflowRuntime``, found through ``current()``: the running
event loop of workflow code is a ``WorkflowEventLoop`` whose ``runtime`` attribute is the
``WorkflowInstance`` (``_instance.py``). Outside workflow code there is none.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

if TYPE_CHECKING:
    from chronicle.history.values import RetryPolicy
    from chronicle.sdk._child import ChildWorkflowHandle
    from chronicle.sdk._definitions import ActivityDefinition, ActivityOptions
    from chronicle.sdk._info import WorkflowInfo

__all__ = ["RUNTIME_ATTR", "WorkflowRuntime", "current", "current_or_none"]

RUNTIME_ATTR = "chronicle_runtime"
"""Attribute of a workflow event loop that holds its ``WorkflowRuntime``."""


class WorkflowRuntime(Protocol):
    """What the in-workflow API needs from whatever runs the workflow code."""

    def info(self) -> WorkflowInfo:
        """The run being executed."""
        ...

    def now(self) -> datetime:
        """Workflow time: the time of the current workflow task (timezone-aware UTC)."""
        ...

    def random(self) -> random.Random:
        """The run's deterministic random generator."""
        ...

    def uuid4(self) -> uuid.UUID:
        """A version-4 UUID drawn from ``random()``."""
        ...

    def is_replaying(self) -> bool:
        """True while the code re-runs an already recorded workflow task."""
        ...

    def start_activity(
        self, name: str, args: Sequence[Any], options: ActivityOptions, return_hint: Any
    ) -> Coroutine[Any, Any, Any]:
        """Schedule an activity now; the coroutine waits for (and returns) its result."""
        ...

    def start_local_activity(
        self,
        name: str,
        definition: ActivityDefinition | None,
        args: Sequence[Any],
        options: ActivityOptions,
        return_hint: Any,
    ) -> Coroutine[Any, Any, Any]:
        """Run a local activity in the worker; the coroutine returns its recorded result."""
        ...

    def start_child(
        self,
        workflow_type: str,
        args: Sequence[Any],
        *,
        workflow_id: str | None,
        task_queue: str | None,
        execution_timeout: timedelta | None,
        run_timeout: timedelta | None,
        parent_close_policy: str,
        retry_policy: RetryPolicy | None,
        return_hint: Any,
    ) -> ChildWorkflowHandle[Any]:
        """Start a child workflow now (its command is recorded at the call); its handle."""
        ...

    def wait_condition(
        self, predicate: Callable[[], bool], timeout: timedelta | None
    ) -> Coroutine[Any, Any, None]:
        """Resume when ``predicate()`` is true; ``TimeoutError`` after ``timeout``."""
        ...

    def wait_signal(self, name: str, timeout: timedelta | None) -> Coroutine[Any, Any, Any]:
        """The next signal ``name`` (in arrival order); ``TimeoutError`` after ``timeout``."""
        ...

    def set_signal_handler(self, name: str, handler: Callable[..., Any] | None) -> None:
        """Register (or remove) the handler of signal ``name``; buffered signals are delivered."""
        ...

    def set_query_handler(self, name: str, handler: Callable[..., Any] | None) -> None:
        """Register (or remove) the handler of query ``name``."""
        ...

    def set_update_handler(
        self, name: str, handler: Callable[..., Any] | None, validator: Callable[..., Any] | None
    ) -> None:
        """Register (or remove) the handler of update ``name`` and its validator."""
        ...

    def patched(self, patch_id: str) -> bool:
        """True for code that runs after the change ``patch_id`` was deployed (see API.md)."""
        ...

    def deprecate_patch(self, patch_id: str) -> None:
        """The change ``patch_id`` is the only code path now (see ``workflow.deprecate_patch``)."""
        ...

    def continue_as_new(
        self, args: Sequence[Any], workflow_type: str | None, task_queue: str | None
    ) -> NoReturn:
        """Close this run and start a new one with ``args``."""
        ...


def current_or_none() -> WorkflowRuntime | None:
    """The runtime of the workflow code running on this thread, or ``None``."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    runtime: WorkflowRuntime | None = getattr(loop, RUNTIME_ATTR, None)
    return runtime


def current() -> WorkflowRuntime:
    """The runtime of the workflow code running on this thread; ``RuntimeError`` elsewhere."""
    runtime = current_or_none()
    if runtime is None:
        raise RuntimeError(
            "not in workflow code: this call is only available inside a @workflow function "
            "run by a Chronicle worker (or chronicle.sdk.replay)"
        )
    return runtime
