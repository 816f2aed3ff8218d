"""Durable calls of one workflow instance: activities, timers, child workflows, external signals.

Each call gets the next sequence number of its kind when workflow code makes it, emits its
command (with the call site) into the activation's ``CommandBuffer`` and waits as a pending
operation (``_commands.py``) until the event that resolves it is a job of a later activation;
``SeqIndex`` maps that event back to the seq. Local activities are not here (``_local.py``).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from chronicle.history import commands as cmd
from chronicle.history import events as ev
from chronicle.history.payloads import PayloadEncodingError, to_payload
from chronicle.history.values import FailureKind, Payload, RetryPolicy
from chronicle.sdk._activation import SeqIndex
from chronicle.sdk._child import ChildWorkflowHandle
from chronicle.sdk._commands import (
    CommandBuffer,
    PendingActivity,
    PendingChild,
    PendingTimer,
    call_site,
)
from chronicle.sdk._definitions import ActivityOptions
from chronicle.sdk._info import WorkflowInfo
from chronicle.sdk._loop import WorkflowEventLoop
from chronicle.sdk.errors import failure_to_exception

__all__ = ["DurableCalls", "SavedCalls", "encode_arguments"]

SavedCalls = tuple[
    dict[str, int], dict[int, PendingTimer], dict[int, PendingActivity], dict[int, PendingChild]
]
"""What ``DurableCalls.save`` returns: seqs, timers, activities and children as they were."""


def encode_arguments(what: str, args: Sequence[Any]) -> tuple[Payload, ...]:
    """``args`` as payloads; ``PayloadEncodingError`` names the argument and ``what``."""
    out: list[Payload] = []
    for position, value in enumerate(args, start=1):
        try:
            out.append(to_payload(value))
        except PayloadEncodingError as exc:
            raise PayloadEncodingError(f"argument {position} of {what}: {exc}") from exc
    return tuple(out)


class DurableCalls:
    """The seqs and pending activities, timers, children and external signals of one run."""

    def __init__(
        self, loop: WorkflowEventLoop, buffer: CommandBuffer, info: WorkflowInfo, index: SeqIndex
    ) -> None:
        self._loop = loop
        self._buffer = buffer
        self._info = info
        self._index = index
        self._seqs: dict[str, int] = defaultdict(int)
        self._activities: dict[int, PendingActivity] = {}
        self._timers: dict[int, PendingTimer] = {}
        self._children: dict[int, PendingChild] = {}
        self._external_signals: dict[int, asyncio.Future[None]] = {}

    def save(self) -> SavedCalls:
        """The seqs and pending maps, for ``restore`` after a read-only call (a query)."""
        return dict(self._seqs), dict(self._timers), dict(self._activities), dict(self._children)

    def restore(self, saved: SavedCalls) -> None:
        """Put back what ``save`` returned: the read-only call leaves no trace."""
        seqs, timers, activities, children = saved
        self._seqs = defaultdict(int, seqs)
        self._timers, self._activities, self._children = timers, activities, children

    def next_seq(self, kind: str) -> int:
        """The next sequence number of ``kind`` (``activity``, ``timer``, ``marker`` …)."""
        self._seqs[kind] += 1
        return self._seqs[kind]

    # ------------------------------------------------------------ resolving (jobs)

    def resolve_activity(
        self,
        a: ev.ActivityCompleted | ev.ActivityFailed | ev.ActivityTimedOut | ev.ActivityCanceled,
    ) -> None:
        """Resolve the activity an outcome event names (none if abandoned or never sent)."""
        pending = self._activities.pop(self._index.activities.get(a.scheduled_event_id, 0), None)
        if pending is None:
            return  # abandoned, or cancelled before it was sent
        if isinstance(a, ev.ActivityCompleted):
            pending.resolve_completed(a.result)
        elif isinstance(a, ev.ActivityFailed):
            pending.resolve_failed(a.failure, a.attempt)
        elif isinstance(a, ev.ActivityTimedOut):
            failure = a.failure
            if failure.kind is not FailureKind.TIMEOUT:  # the cause must say "timeout"
                failure = replace(failure, kind=FailureKind.TIMEOUT, timeout_type=a.timeout_type)
            pending.resolve_failed(failure, a.attempt, f"timed out ({a.timeout_type})")
        else:
            pending.resolve_cancelled()

    def resolve_child(
        self,
        a: ev.ChildWorkflowStarted
        | ev.ChildWorkflowStartFailed
        | ev.ChildWorkflowCompleted
        | ev.ChildWorkflowFailed,
    ) -> None:
        """Give a child its run id (``ChildWorkflowStarted``) or resolve it with its outcome."""
        seq = self._index.children.get(a.initiated_event_id, 0)
        if isinstance(a, ev.ChildWorkflowStarted):
            child = self._children.get(seq)
            if child is not None:
                child.resolve_started(a.run_id)
            return
        child = self._children.pop(seq, None)
        if child is None:
            return
        if isinstance(a, ev.ChildWorkflowCompleted):
            child.resolve_completed(a.result)
        elif isinstance(a, ev.ChildWorkflowStartFailed):
            child.resolve_failed(a.failure, "could not start")
        else:
            child.resolve_failed(a.failure)

    def fire_timer(self, a: ev.TimerFired) -> None:
        """Run the callback of the timer ``a`` fired (none if it was cancelled)."""
        timer = self._timers.pop(self._index.timers.get(a.started_event_id, 0), None)
        if timer is not None:
            timer.fire()

    def resolve_external_signal(self, a: ev.ExternalSignalResolved) -> None:
        """Resolve the wait of a ``signal_external`` with its delivery or failure."""
        seq = self._index.externals.get(a.initiated_event_id, 0)
        future = self._external_signals.pop(seq, None)
        if future is not None and not future.done():
            if a.failure is None:
                future.set_result(None)
            else:
                future.set_exception(failure_to_exception(a.failure))

    # ------------------------------------------------------------ calls (workflow code)

    def start_activity(
        self, name: str, args: Sequence[Any], options: ActivityOptions, return_hint: Any
    ) -> Coroutine[Any, Any, Any]:
        """Schedule activity ``name`` now (seq allocated at the call); await the result."""
        payloads = encode_arguments(name, args)
        site = call_site()
        seq = self.next_seq("activity")
        command = cmd.ScheduleActivity(
            seq=seq,
            activity_id=str(seq),
            activity_type=name,
            task_queue=options.task_queue or "",
            input=payloads,
            schedule_to_close_timeout=options.schedule_to_close_timeout,
            schedule_to_start_timeout=options.schedule_to_start_timeout,
            start_to_close_timeout=options.start_to_close_timeout,
            heartbeat_timeout=options.heartbeat_timeout,
            retry_policy=options.retry,
            call_site=site,
        )
        pending = PendingActivity(
            self._loop,
            self._buffer,
            command,
            return_hint,
            options.cancellation_type,
            self._forget_activity,
        )
        self._activities[seq] = pending
        self._buffer.add(command, site)
        return pending.wait()

    def _forget_activity(self, seq: int) -> None:
        self._activities.pop(seq, None)

    def start_timer(self, duration: timedelta, fire: Callable[[], None]) -> int:
        """``TimerService``: record a StartTimer; ``fire`` runs on TimerFired."""
        site = call_site()
        seq = self.next_seq("timer")
        command = cmd.StartTimer(seq=seq, duration=duration, call_site=site)
        self._timers[seq] = PendingTimer(seq, command, fire)
        self._buffer.add(command, site)
        return seq

    def cancel_timer(self, seq: int) -> None:
        """``TimerService``: cancel timer ``seq`` (drop its StartTimer if not sent yet)."""
        timer = self._timers.pop(seq, None)
        if timer is not None and not self._buffer.remove(timer.command):
            self._buffer.add(cmd.CancelTimer(seq=seq))

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
        """Start a child workflow now (seq allocated at the call); its handle."""
        payloads = encode_arguments(workflow_type, args)
        site = call_site()
        seq = self.next_seq("child")
        command = cmd.StartChildWorkflow(
            seq=seq,
            workflow_id=workflow_id or f"{self._info.workflow_id}-child-{seq}",
            workflow_type=workflow_type,
            task_queue=task_queue or "",
            input=payloads,
            parent_close_policy=parent_close_policy,
            execution_timeout=execution_timeout,
            run_timeout=run_timeout,
            retry_policy=retry_policy,
            call_site=site,
        )
        child = PendingChild(
            self._loop, self._buffer, command, return_hint, self._forget_child, self._cancel_child
        )
        self._children[seq] = child
        self._buffer.add(command, site)
        return ChildWorkflowHandle(child, self.signal_external)

    def signal_external(
        self, workflow_id: str, run_id: str, name: str, args: Sequence[Any]
    ) -> Coroutine[Any, Any, None]:
        """Signal another workflow run (seq allocated at the call); await its delivery."""
        if not name:
            raise ValueError("a signal needs a name")
        payloads = encode_arguments(f"signal {name!r}", args)
        site = call_site()
        seq = self.next_seq("external")
        command = cmd.SignalExternalWorkflow(
            seq=seq,
            workflow_id=workflow_id,
            run_id=run_id,
            signal_name=name,
            input=payloads,
            call_site=site,
        )
        future: asyncio.Future[None] = self._loop.create_future()
        self._external_signals[seq] = future
        self._buffer.add(command, site)

        async def delivered() -> None:
            await future

        return delivered()

    def _forget_child(self, seq: int) -> None:
        self._children.pop(seq, None)

    def _cancel_child(self, child: PendingChild) -> None:
        self._buffer.add(
            cmd.RequestCancelExternalWorkflow(
                seq=self.next_seq("external"),
                workflow_id=child.command.workflow_id,
                run_id=child.run_id,
            )
        )
