"""Signals of one workflow instance: registered handlers, buffered signals, waiting code.

A signal (a ``SignalReceived`` job) goes to its registered handler, which runs as a task of the
workflow's loop; else to the oldest ``workflow.wait_signal`` waiting for its name; else into a
buffer that a later ``wait_signal`` or handler registration drains, in arrival order. A signal
whose arguments do not fit its handler is dropped with a warning (see ``_run_signal_handler``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from chronicle.history.payloads import PayloadEncodingError, from_payloads
from chronicle.history.values import Payload
from chronicle.sdk._definitions import hints_of
from chronicle.sdk._info import WorkflowInfo
from chronicle.sdk._loop import WorkflowEventLoop

__all__ = ["SignalHandlers"]

_log = logging.getLogger("chronicle.workflow")


def _signal_value(values: list[Any]) -> Any:
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


class SignalHandlers:
    """Signal handlers, buffered signals and ``wait_signal`` waiters of one workflow run."""

    def __init__(
        self,
        loop: WorkflowEventLoop,
        info: WorkflowInfo,
        is_replaying: Callable[[], bool],
        on_bug: Callable[[asyncio.Task[None]], None],
    ) -> None:
        self._loop = loop
        self._info = info
        self._is_replaying = is_replaying
        self._on_bug = on_bug
        self._signal_handlers: dict[str, Callable[..., Any]] = {}
        self._signal_buffer: dict[str, deque[tuple[Payload, ...]]] = defaultdict(deque)
        self._signal_waiters: dict[str, deque[asyncio.Future[Any]]] = defaultdict(deque)

    async def wait_signal(self, name: str, timeout: timedelta | None) -> Any:
        """The next buffered signal ``name``, else wait for one."""
        buffered = self._signal_buffer.get(name)
        if buffered:
            return _signal_value(from_payloads(buffered.popleft(), ()))
        future: asyncio.Future[Any] = self._loop.create_future()
        self._signal_waiters[name].append(future)
        if timeout is None:
            return await future
        async with asyncio.timeout(timeout.total_seconds()):
            return await future

    def deliver(self, name: str, payloads: tuple[Payload, ...]) -> None:
        """Hand a received signal to its handler, else a waiter, else the buffer."""
        handler = self._signal_handlers.get(name)
        if handler is not None:
            self._run_signal_handler(name, handler, payloads)
            return
        waiters = self._signal_waiters.get(name)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                try:
                    waiter.set_result(_signal_value(from_payloads(payloads, ())))
                except PayloadEncodingError as exc:
                    waiter.set_exception(exc)
                return
        self._signal_buffer[name].append(payloads)

    def _run_signal_handler(
        self, name: str, handler: Callable[..., Any], payloads: tuple[Payload, ...]
    ) -> None:
        """Run ``handler`` for one signal, or drop the signal with a warning when its arguments
        do not fit the handler (a bad signal from outside must not wedge the workflow: a
        workflow-task failure would repeat forever, since the signal stays in the history)."""
        try:
            args = from_payloads(payloads, hints_of(handler)[0])
        except PayloadEncodingError as exc:
            self._drop_signal(name, handler, str(exc))
            return
        try:
            signature = inspect.signature(handler)
        except (TypeError, ValueError):  # a builtin without a signature: let the call decide
            signature = None
        if signature is not None:
            try:
                signature.bind(*args)
            except TypeError as exc:
                self._drop_signal(name, handler, f"{len(args)} argument(s) given: {exc}")
                return
        self._run_handler(f"signal {name!r}", handler, args)

    def _drop_signal(self, name: str, handler: Callable[..., Any], why: str) -> None:
        if self._is_replaying():
            return  # logged when it was first delivered
        _log.warning(
            "workflow %s (run %s): dropped signal %r: its arguments do not fit handler %s (%s)",
            self._info.workflow_id,
            self._info.run_id,
            name,
            getattr(handler, "__qualname__", repr(handler)),
            why,
        )

    def _run_handler(self, what: str, handler: Callable[..., Any], args: Sequence[Any]) -> None:
        async def run() -> None:
            result = handler(*args)
            if inspect.isawaitable(result):
                await result

        task = self._loop.create_task(run(), name=f"{self._loop.name} {what}")
        task.add_done_callback(self._on_bug)

    def set_signal_handler(self, name: str, handler: Callable[..., Any] | None) -> None:
        """Register (or remove) a signal handler; buffered signals go to it now, in order."""
        if handler is None:
            self._signal_handlers.pop(name, None)
            return
        self._signal_handlers[name] = handler
        buffered = self._signal_buffer.pop(name, deque())
        while buffered:
            self._run_signal_handler(name, handler, buffered.popleft())
