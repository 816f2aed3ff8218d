"""``ChildWorkflowHandle``: what ``workflow.start_child`` returns inside a workflow.

The handle exists once the child run has started (``ChildWorkflowStarted``); awaiting it (or its
``result()``) waits for the child's outcome exactly like ``workflow.execute_child``, and
``signal()`` records a ``SignalExternalWorkflow`` command addressed to the child's run.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any, Generic, TypeVar

from chronicle.sdk._commands import PendingChild

__all__ = ["ChildWorkflowHandle"]

R = TypeVar("R")

SignalFn = Callable[[str, str, str, Sequence[Any]], Coroutine[Any, Any, None]]
"""``(workflow_id, run_id, signal_name, args)`` → the coroutine that records the signal."""


class ChildWorkflowHandle(Generic[R]):
    """A started child workflow: ``await handle`` (or ``handle.result()``) for its result,
    ``await handle.signal(name, *args)`` to signal it. Made by ``workflow.start_child``."""

    def __init__(self, pending: PendingChild, signal: SignalFn) -> None:
        self._pending = pending
        self._signal = signal

    @property
    def id(self) -> str:
        """The child's workflow id."""
        return self._pending.command.workflow_id

    @property
    def run_id(self) -> str:
        """The child's run id ("" until it started)."""
        return self._pending.run_id

    @property
    def workflow_type(self) -> str:
        """The child's workflow type."""
        return self._pending.command.workflow_type

    def __repr__(self) -> str:
        return f"ChildWorkflowHandle(id={self.id!r}, run_id={self.run_id!r})"

    def result(self) -> Coroutine[Any, Any, R]:
        """The child's result; ``ChildWorkflowError`` (with the cause) if it did not complete.

        Cancelling the awaiting task asks the child to cancel and waits for its end.
        """
        return self._pending.wait()

    def __await__(self) -> Generator[Any, None, R]:
        return self._pending.wait().__await__()

    def signal(self, name: str, *args: Any) -> Coroutine[Any, Any, None]:
        """Send signal ``name`` with ``args`` to the child (durable: recorded in the history).

        Raises ``ApplicationError`` (type ``WorkflowNotFound``) if the child is already closed.
        """
        return self._signal(self.id, self.run_id, name, args)

    async def wait_started(self) -> ChildWorkflowHandle[R]:
        """Wait until the child run exists; ``ChildWorkflowError`` if it could not start."""
        if not await self._pending.wait_started():
            await self._pending.wait()  # raises the start failure
        return self
