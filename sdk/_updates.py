"""Update handlers of one workflow instance, and the argument checks shared with queries.

An update reaches the workflow twice:

1. **Validation** (``validate``), before anything is recorded: read-only, on the worker's cached
   instance or a replay. The handler must be registered, the arguments must fit its signature
   and type hints, and the validator (if any) must return without raising. Any error rejects
   the update; the server writes nothing.
2. **Execution**, once the server recorded ``UpdateAccepted``: the event is a job of the next
   activation (``accept``). The handler runs as a task of the workflow's loop (it may await
   activities, timers, …) and, when it ends, emits ``CompleteUpdate`` with its result, or with
   its failure when it raised a ``FailureError`` (``ApplicationError`` …). Any other exception
   is a bug: it fails the workflow *task*, as in workflow code. Replay runs the handler again
   and checks its ``CompleteUpdate`` against the recorded ``UpdateCompleted``.

An update accepted before its handler is registered (the very first activation, before the
workflow function ran) waits until the end of that activation; still unhandled then, it is
completed with an ``UpdateNotFound`` failure. The same rule runs on replay, so it is
deterministic.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chronicle.history import commands as cmd
from chronicle.history import events as ev
from chronicle.history.payloads import PayloadEncodingError, from_payloads, to_payload
from chronicle.history.values import Payload
from chronicle.sdk._commands import CommandBuffer
from chronicle.sdk._definitions import hints_of
from chronicle.sdk.errors import (
    ApplicationError,
    CancelledFailure,
    FailureError,
    exception_to_failure,
)

__all__ = ["UpdateHandler", "UpdateHandlers", "decode_arguments"]


def decode_arguments(
    what: str, handler: Callable[..., Any], payloads: Sequence[Payload]
) -> list[Any]:
    """``payloads`` decoded for ``handler`` by its type hints, after checking their number.

    ``ApplicationError`` (type ``InvalidArguments``) naming ``what`` when they do not fit.
    """
    try:
        decoded = from_payloads(payloads, hints_of(handler)[0])
    except PayloadEncodingError as exc:
        raise ApplicationError(f"{what}: {exc}", type="InvalidArguments") from None
    try:
        inspect.signature(handler).bind(*decoded)
    except TypeError as exc:
        raise ApplicationError(
            f"{what} got {len(decoded)} argument(s): {exc}", type="InvalidArguments"
        ) from None
    except ValueError:  # no signature (a builtin): let the call decide
        pass
    return decoded


@dataclass(frozen=True, slots=True)
class UpdateHandler:
    """A registered update handler and its optional validator."""

    fn: Callable[..., Any]
    validator: Callable[..., Any] | None = None


class UpdateHandlers:
    """Registered update handlers, accepted updates waiting for theirs, running handlers."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        buffer: CommandBuffer,
        task_name: str,
        on_bug: Callable[[asyncio.Task[None]], None],
    ) -> None:
        self._loop = loop
        self._buffer = buffer
        self._task_name = task_name
        self._on_bug = on_bug
        self.handlers: dict[str, UpdateHandler] = {}
        self._waiting: list[ev.UpdateAccepted] = []

    def names(self) -> str:
        """The registered names, for error messages."""
        return ", ".join(sorted(self.handlers)) or "none"

    def set(
        self, name: str, fn: Callable[..., Any] | None, validator: Callable[..., Any] | None
    ) -> None:
        """Register (or with ``fn=None`` remove) a handler; waiting updates of it start now."""
        if fn is None:
            self.handlers.pop(name, None)
            return
        if not callable(fn) or (validator is not None and not callable(validator)):
            raise TypeError(f"update {name!r}: the handler and the validator must be callables")
        self.handlers[name] = UpdateHandler(fn, validator)
        waiting, self._waiting = self._waiting, []
        for accepted in waiting:
            self.accept(accepted)

    def handler(self, name: str) -> UpdateHandler:
        """The handler of ``name``; ``ApplicationError`` (``UpdateNotFound``) listing the names."""
        handler = self.handlers.get(name)
        if handler is None:
            raise ApplicationError(
                f"unknown update {name!r} (registered: {self.names()})", type="UpdateNotFound"
            )
        return handler

    def validate(
        self,
        name: str,
        payloads: Sequence[Payload],
        read_only: Callable[[str, Callable[..., Any], Sequence[Any]], Any],
    ) -> None:
        """Raise unless update ``name`` with ``payloads`` would be accepted now (module doc)."""
        handler = self.handler(name)
        decode_arguments(f"update {name!r}", handler.fn, payloads)
        if handler.validator is not None:
            args = decode_arguments(f"validator of update {name!r}", handler.validator, payloads)
            read_only(f"validator of update {name!r}", handler.validator, args)

    def accept(self, accepted: ev.UpdateAccepted) -> None:
        """Start the handler of a recorded ``UpdateAccepted`` (or keep it until registered)."""
        handler = self.handlers.get(accepted.update_name)
        if handler is None:
            self._waiting.append(accepted)
            return
        task = self._loop.create_task(
            self._run(accepted, handler),
            name=f"{self._task_name} update {accepted.update_name!r} {accepted.update_id}",
        )
        task.add_done_callback(self._on_bug)

    def reject_waiting(self) -> None:
        """End of an activation: complete the updates that found no handler with a failure."""
        waiting, self._waiting = self._waiting, []
        for accepted in waiting:
            error = ApplicationError(
                f"unknown update {accepted.update_name!r} (registered: {self.names()})",
                type="UpdateNotFound",
            )
            self._complete(accepted.update_id, failure=error)

    async def _run(self, accepted: ev.UpdateAccepted, handler: UpdateHandler) -> None:
        name = accepted.update_name
        try:
            args = decode_arguments(f"update {name!r}", handler.fn, accepted.input)
            result = handler.fn(*args)
            if inspect.isawaitable(result):
                result = await result
            payload = to_payload(result)
        except FailureError as exc:
            self._complete(accepted.update_id, failure=exc)
            return
        except asyncio.CancelledError as exc:  # nothing is emitted while evicting
            self._complete(accepted.update_id, failure=CancelledFailure(str(exc) or "cancelled"))
            return
        self._complete(accepted.update_id, result=payload)

    def _complete(
        self, update_id: str, *, result: Payload | None = None, failure: FailureError | None = None
    ) -> None:
        self._buffer.add(
            cmd.CompleteUpdate(
                update_id=update_id,
                result=result,
                failure=exception_to_failure(failure) if failure is not None else None,
            )
        )
