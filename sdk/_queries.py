"""Query handlers of one workflow instance, and read-only calls (queries, update validators).

A query runs on the instance's state between activations, and so does the validator of an
update (``_updates.py``). Replay never runs either, so they must leave no trace: a read-only call
must be synchronous, issue no commands and register no handlers (``ApplicationError``, type
``InvalidQueryHandler``), and what else it changes (seqs, the random state, patch decisions) is
put back. The built-in ``STACK_QUERY`` answers with the workflow's stack (``_stack.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from chronicle.history.payloads import to_payload
from chronicle.history.values import Payload
from chronicle.sdk._commands import CommandBuffer
from chronicle.sdk._loop import WorkflowEventLoop
from chronicle.sdk._stack import STACK_QUERY
from chronicle.sdk._updates import decode_arguments
from chronicle.sdk.errors import ApplicationError

__all__ = ["QueryHandlers"]


class QueryHandlers:
    """Registered query handlers, and running a handler read-only (see the module docstring).

    ``save_state`` saves what a read-only call may change and returns what puts it back;
    ``stack`` renders the workflow's stack for ``STACK_QUERY``.
    """

    def __init__(
        self,
        loop: WorkflowEventLoop,
        buffer: CommandBuffer,
        save_state: Callable[[], Callable[[], None]],
        stack: Callable[[], str],
    ) -> None:
        self._loop = loop
        self._buffer = buffer
        self._save_state = save_state
        self._stack = stack
        self._handlers: dict[str, Callable[..., Any]] = {}
        self._running: str | None = None
        """What read-only call runs now (``handler 'x'``), or None."""
        self._refused: list[str] = []
        """The changes the running read-only call attempted and was refused, in order."""

    def refuse_in_read_only(self, action: str) -> None:
        """Raise ``ApplicationError`` (``InvalidQueryHandler``) if a read-only call runs now:
        it may not ``action`` (e.g. "set the handler of signal 'x'"). The call fails even if it
        catches the error, so a refused change never passes silently."""
        if self._running is None:
            return
        message = (
            f"{self._running} tried to {action}; queries and validators must be read-only "
            "(register handlers in the workflow function or in signal and update handlers)"
        )
        self._refused.append(message)
        raise ApplicationError(message, type="InvalidQueryHandler")

    def set(self, name: str, handler: Callable[..., Any] | None) -> None:
        """Register (or with ``handler=None`` remove) the handler of query ``name``."""
        if handler is None:
            self._handlers.pop(name, None)
        else:
            self._handlers[name] = handler

    def answer(self, name: str, args: Sequence[Payload]) -> Payload:
        """Answer query ``name`` from the current state; read-only (``ApplicationError`` if the
        handler is unknown, async, or tries to issue commands, or the arguments do not fit)."""
        if name == STACK_QUERY:
            return to_payload(self._stack())
        handler = self._handlers.get(name)
        if handler is None:
            known = ", ".join(sorted(self._handlers)) or "none"
            raise ApplicationError(
                f"unknown query {name!r} (registered: {known})", type="QueryNotFound"
            )
        decoded = decode_arguments(f"query {name!r}", handler, args)
        return to_payload(self.read_only(f"query handler {name!r}", handler, decoded))

    def read_only(self, what: str, handler: Callable[..., Any], decoded: Sequence[Any]) -> Any:
        """``handler(*decoded)`` leaving no trace: a query or an update validator."""
        before = len(self._buffer.items)
        restore = self._save_state()
        unschedule = self._loop.snapshot()
        self._running = what
        self._refused.clear()
        try:
            with self._loop.running():
                result = handler(*decoded)
        except BaseException:
            del self._buffer.items[before:]  # commands issued before it raised
            raise
        finally:  # a query must leave no trace: replay never runs it
            refused, self._running = self._refused[:1], None
            self._refused.clear()
            unschedule()
            restore()
        if refused:  # the handler caught the refusal and went on
            if inspect.iscoroutine(result):
                result.close()
            raise ApplicationError(refused[0], type="InvalidQueryHandler")
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise ApplicationError(f"{what} must be synchronous", type="InvalidQueryHandler")
        if len(self._buffer.items) != before:
            del self._buffer.items[before:]
            raise ApplicationError(
                f"{what} issued commands; queries and validators must be read-only",
                type="InvalidQueryHandler",
            )
        return result
