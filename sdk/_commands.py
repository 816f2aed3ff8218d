"""Pending durable operations and the commands they emit.

Each operation the workflow code starts (an activity, a timer, a child workflow) gets its ``seq``
from a per-kind counter *when the code calls it*, writes its command into the activation's
``CommandBuffer`` and holds the future that a later history event resolves. Calling order, not
await order, numbers operations: that keeps ``asyncio.gather`` deterministic.

Cancelling an operation whose command was not sent yet (same activation) just removes the
command; otherwise it emits the matching cancel command.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from chronicle.history import commands as cmd
from chronicle.history.payloads import from_payload
from chronicle.history.values import CallSite, Failure, Payload
from chronicle.sdk.errors import (
    ActivityError,
    CancelledFailure,
    ChildWorkflowError,
    FailureError,
    failure_to_exception,
)

__all__ = [
    "CommandBuffer",
    "Emitted",
    "PendingActivity",
    "PendingChild",
    "PendingTimer",
    "call_site",
]

_SKIPPED_MODULES = ("chronicle.sdk", "asyncio", "contextlib", "functools")


def _display_path(filename: str, module: str) -> str:
    """The file as seen from its import root (``billing/charge.py`` for ``billing.charge``), so
    recorded call sites do not depend on where the code is deployed; else the path as given."""
    relative = module.replace(".", "/")
    normalized = filename.replace("\\", "/")
    for candidate in (f"{relative}.py", f"{relative}/__init__.py"):
        if normalized.endswith("/" + candidate) or normalized == candidate:
            return candidate
    return filename


def call_site() -> CallSite | None:
    """The innermost frame of workflow code on the stack: the first one outside the SDK and
    asyncio. ``None`` when only the driver is left (e.g. a timer created inside ``gather``)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module == "asyncio.events":  # Handle._run: below it is the driver, not the workflow
            return None
        if not module.startswith(_SKIPPED_MODULES):
            code = frame.f_code
            return CallSite(
                file=_display_path(code.co_filename, module),
                line=frame.f_lineno,
                function=code.co_name,
            )
        frame = frame.f_back
    return None


@dataclass(slots=True)
class Emitted:
    """A command emitted by workflow code, and where in the code it came from."""

    command: cmd.Command
    call_site: CallSite | None = None


class CommandBuffer:
    """The commands of the activation being run, in emission order."""

    def __init__(self) -> None:
        self.items: list[Emitted] = []
        self.enabled = True
        """False while the instance is being evicted: operations emit nothing then."""

    def add(self, command: cmd.Command, site: CallSite | None = None) -> None:
        """Append ``command`` (ignored while disabled)."""
        if self.enabled:
            self.items.append(Emitted(command, site))

    def remove(self, command: cmd.Command) -> bool:
        """Drop ``command`` if it was not sent yet (identity); True if it was dropped."""
        for index, item in enumerate(self.items):
            if item.command is command:
                del self.items[index]
                return True
        return False

    def take(self) -> list[Emitted]:
        """Return and clear the buffered commands."""
        items, self.items = self.items, []
        return items


class PendingTimer:
    """A durable timer; ``fire`` runs its callback (the loop's timer handle)."""

    def __init__(self, seq: int, command: cmd.StartTimer, fire: Callable[[], None]) -> None:
        self.seq = seq
        self.command = command
        self.fire = fire


class PendingActivity:
    """A scheduled activity: resolved by ActivityCompleted/Failed/TimedOut/Canceled."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        buffer: CommandBuffer,
        command: cmd.ScheduleActivity,
        return_hint: Any,
        cancellation_type: str,
        forget: Callable[[int], None],
    ) -> None:
        self.seq = command.seq
        self.command = command
        self.future: asyncio.Future[Any] = loop.create_future()
        self._buffer = buffer
        self._return_hint = return_hint
        self._cancellation_type = cancellation_type
        self._forget = forget
        self.cancel_requested = False

    def _error(self, message: str, cause: FailureError | None, attempt: int = 0) -> ActivityError:
        command = self.command
        return ActivityError(
            f"activity {command.activity_type} (id {command.activity_id}) {message}",
            cause=cause,
            activity_type=command.activity_type,
            activity_id=command.activity_id,
            attempt=attempt,
        )

    def resolve_completed(self, result: Payload | None) -> None:
        """ActivityCompleted: the result, decoded with the activity's return hint."""
        if self.future.done():
            return
        try:
            value = from_payload(result, self._return_hint) if result is not None else None
        except ValueError as exc:
            self.future.set_exception(exc)
            return
        self.future.set_result(value)

    def resolve_failed(self, failure: Failure, attempt: int, what: str = "failed") -> None:
        """ActivityFailed/TimedOut: ``ActivityError`` whose cause is the failure's exception."""
        if not self.future.done():
            cause = failure_to_exception(failure)
            self.future.set_exception(self._error(f"{what}: {cause.message}", cause, attempt))

    def resolve_cancelled(self) -> None:
        """ActivityCanceled: ``ActivityError`` caused by a ``CancelledFailure``."""
        if not self.future.done():
            cause = CancelledFailure("activity cancelled")
            self.future.set_exception(self._error("was cancelled", cause))

    def request_cancel(self) -> None:
        """The awaiting code was cancelled: apply the cancellation type."""
        if self.future.done() or self.cancel_requested:
            return
        self.cancel_requested = True
        if self._cancellation_type == "abandon":
            return
        if self._buffer.remove(self.command):  # never sent: nothing to cancel on the server
            self._forget(self.seq)
            self.resolve_cancelled()
            return
        self._buffer.add(cmd.RequestCancelActivity(seq=self.seq))

    async def wait(self) -> Any:
        """The activity's result; on cancellation of the awaiting task, cancel the activity."""
        try:
            return await asyncio.shield(self.future)
        except asyncio.CancelledError:
            if self.future.done() and not self.future.cancelled():
                self.future.exception()  # retrieved: the cancellation wins
            self.request_cancel()
            if (
                self._cancellation_type == "wait_cancellation_completed"
                and not self.future.done()
                and self._buffer.enabled  # not while evicting: no outcome will arrive
            ):
                try:
                    await self.future
                except Exception:  # the outcome is moot: we report the cancellation
                    pass
            raise


class PendingChild:
    """A child workflow: ChildWorkflowStarted gives its run id; Completed/Failed resolve it."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        buffer: CommandBuffer,
        command: cmd.StartChildWorkflow,
        return_hint: Any,
        forget: Callable[[int], None],
        cancel: Callable[[PendingChild], None],
    ) -> None:
        self.seq = command.seq
        self.command = command
        self.run_id = ""
        self.future: asyncio.Future[Any] = loop.create_future()
        self.started: asyncio.Future[bool] = loop.create_future()
        """True once the child run exists; False if it ended without starting."""
        self._buffer = buffer
        self._return_hint = return_hint
        self._forget = forget
        self._cancel = cancel
        self.cancel_requested = False

    def _settle_started(self, started: bool) -> None:
        if not self.started.done():
            self.started.set_result(started)

    def _error(self, message: str, cause: FailureError | None) -> ChildWorkflowError:
        command = self.command
        return ChildWorkflowError(
            f"child workflow {command.workflow_type} (id {command.workflow_id}) {message}",
            cause=cause,
            workflow_type=command.workflow_type,
            workflow_id=command.workflow_id,
            run_id=self.run_id,
        )

    def resolve_started(self, run_id: str) -> None:
        """ChildWorkflowStarted."""
        self.run_id = run_id
        self._settle_started(True)

    def resolve_completed(self, result: Payload | None) -> None:
        """ChildWorkflowCompleted: the result, decoded with the child's return hint."""
        self._settle_started(True)
        if self.future.done():
            return
        try:
            value = from_payload(result, self._return_hint) if result is not None else None
        except ValueError as exc:
            self.future.set_exception(exc)
            return
        self.future.set_result(value)

    def resolve_failed(self, failure: Failure, what: str = "failed") -> None:
        """ChildWorkflowFailed / StartFailed: ``ChildWorkflowError`` with the failure as cause."""
        self._settle_started(bool(self.run_id))
        if not self.future.done():
            cause = failure_to_exception(failure)
            self.future.set_exception(self._error(f"{what}: {cause.message}", cause))

    async def wait(self) -> Any:
        """The child's result; on cancellation ask the child to cancel and wait for its end."""
        try:
            return await asyncio.shield(self.future)
        except asyncio.CancelledError:
            await self._cancelled()
            raise

    async def wait_started(self) -> bool:
        """True once the child run exists, False if it never will; cancellation as ``wait``."""
        try:
            return await asyncio.shield(self.started)
        except asyncio.CancelledError:
            await self._cancelled()
            raise

    async def _cancelled(self) -> None:
        """The awaiting task was cancelled: cancel the child (or its unsent start), wait for
        its end; the caller re-raises the cancellation."""
        if self.future.done():
            if not self.future.cancelled():
                self.future.exception()
            return
        if not self._buffer.enabled:
            return  # the instance is being evicted: no outcome will ever arrive
        already, self.cancel_requested = self.cancel_requested, True
        if already:
            pass
        elif self._buffer.remove(self.command):
            self._forget(self.seq)
            self._settle_started(False)
            self.future.set_exception(
                self._error("was cancelled before it started", CancelledFailure("child cancelled"))
            )
            self.future.exception()
            return
        else:
            self._cancel(self)
        try:
            await self.future
        except Exception:  # the outcome is moot: we report the cancellation
            pass
