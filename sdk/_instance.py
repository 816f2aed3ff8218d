"""``WorkflowInstance``: one workflow run in memory, driven by its history.

The worker feeds it new events (``activate``); it splits them into activations
(``_activation.py``), applies each activation's jobs (start the function, deliver signals,
resolve activities/timers/children, cancel), runs the deterministic loop until nothing can
progress, checks replayed commands against the history (``_replay.py``) and returns the live
activation's commands. It implements ``WorkflowRuntime`` for ``workflow.*``, handing each
concern to its own part: durable calls (``_calls.py``), signals (``_signals.py``), updates
(``_updates.py``), queries (``_queries.py``), conditions (``_conditions.py``), local activities
(``_local.py``), patches (``_patches.py``).

Outcome policy (STYLE.md, ``_outcome.py``): returning completes the workflow; an uncaught
``FailureError`` fails it; ``CancelledError`` after a cancellation request cancels it; any other
exception, and nondeterminism, fail the workflow *task* (``WorkflowTaskError``), which the server
retries. After ``activate`` raised, the instance is unusable: evict it (``close()``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from types import FrameType
from typing import Any, NoReturn

from chronicle.history import commands as cmd
from chronicle.history import events as ev
from chronicle.history.payloads import PayloadEncodingError, from_payloads
from chronicle.history.values import Payload, RetryPolicy
from chronicle.sdk._activation import Activation, ActivationReader, SeqIndex, Verify
from chronicle.sdk._calls import DurableCalls, encode_arguments
from chronicle.sdk._child import ChildWorkflowHandle
from chronicle.sdk._commands import CommandBuffer, Emitted, call_site
from chronicle.sdk._conditions import Conditions
from chronicle.sdk._definitions import (
    ActivityDefinition,
    ActivityOptions,
    WorkflowDefinition,
)
from chronicle.sdk._guards import GuardMode
from chronicle.sdk._guards import install as install_guards
from chronicle.sdk._info import WorkflowInfo
from chronicle.sdk._local import (
    LocalActivities,
    LocalActivityMismatch,
    LocalActivityRequest,
    LocalOutcome,
)
from chronicle.sdk._loop import new_loop
from chronicle.sdk._outcome import ContinueAsNewRequest, run_outcome, task_error
from chronicle.sdk._patches import Patches
from chronicle.sdk._queries import QueryHandlers
from chronicle.sdk._replay import check_commands, raise_mismatch
from chronicle.sdk._signals import SignalHandlers
from chronicle.sdk._stack import workflow_frames, workflow_stack
from chronicle.sdk._updates import UpdateHandlers
from chronicle.sdk.errors import NondeterminismError, StaleInstanceError, WorkflowTaskError

__all__ = ["WorkflowInstance"]

_log = logging.getLogger("chronicle.workflow")


class WorkflowInstance:
    """One workflow run: its loop, pending operations and handlers. Not thread-safe: one
    ``activate`` at a time (any thread)."""

    guard_mode: GuardMode = "warn"
    """How calls that are not replay-safe are reported (``_guards.py``); the worker sets it."""

    def __init__(self, definition: WorkflowDefinition, info: WorkflowInfo) -> None:
        install_guards()
        self._definition = definition
        self._info = info
        self._buffer = CommandBuffer()
        name = f"workflow {info.workflow_type} {info.workflow_id} run {info.run_id}"
        self._loop = new_loop(self, name=name, runtime=self)
        self._loop.ignored_errors = (ContinueAsNewRequest,)
        self._reader = ActivationReader()
        self._index = SeqIndex()
        self._calls = DurableCalls(self._loop, self._buffer, info, self._index)
        self._locals = LocalActivities(self._buffer)
        self._suspended = False
        self._random = random.Random(0)
        self._now = datetime.fromtimestamp(0).astimezone()
        self._replaying = False
        self._root: asyncio.Task[Any] | None = None
        self._cancel_requested = False
        self._closed = False
        self._broken: BaseException | None = None
        self._handler_error: BaseException | None = None
        self._signals = SignalHandlers(self._loop, info, self.is_replaying, self._handler_done)
        self._updates = UpdateHandlers(self._loop, self._buffer, name, self._handler_done)
        self._conditions = Conditions(self._loop)
        self._patches = Patches(self._buffer, self._calls)
        self._queries = QueryHandlers(self._loop, self._buffer, self._save_state, self.stack)
        self._recorded_now: list[ev.Event] = []
        self._completed_now = 0
        self._unverified: list[Emitted] = []

    # ------------------------------------------------------------ driving (the worker's API)

    @property
    def last_event_id(self) -> int:
        """Id of the last event fed in so far (0 initially)."""
        return self._reader.last_event_id

    @property
    def is_closed(self) -> bool:
        """True once the code produced its closing command (complete, fail, cancel, …)."""
        return self._closed

    @property
    def is_evicted(self) -> bool:
        """True once ``close`` ran: the code was cancelled and the instance cannot go on."""
        return self._loop.is_closed()

    def activate(self, events: Sequence[ev.Event]) -> list[cmd.Command]:
        """Feed the events after ``last_event_id`` (ending with the live WorkflowTaskStarted) and
        return the live activation's commands.

        Raises ``NondeterminismError`` (replayed commands differ from the history),
        ``WorkflowTaskError`` (the task must fail), or ``StaleInstanceError``; after any of them
        the instance must be evicted.
        """
        return self._guarded(lambda: self._activate(list(events)))

    @property
    def local_activities_due(self) -> list[LocalActivityRequest]:
        """Local activities the live activation waits for: run them, then
        ``resume_local_activities`` (empty unless the last call returned while suspended)."""
        return self._locals.due if self._suspended else []

    def resume_local_activities(self, outcomes: dict[int, LocalOutcome]) -> list[cmd.Command]:
        """Record the outcomes (by seq, resolved in seq order) and continue the live activation;
        returns its commands so far (complete unless ``local_activities_due`` is non-empty)."""

        def resume() -> list[cmd.Command]:
            if not self._suspended:
                raise StaleInstanceError("no live activation waits for local activities")
            for seq in sorted(outcomes):
                self._locals.resolve(seq, outcomes[seq])
            return self._finish_live(self._settle(replaying=False))

        return self._guarded(resume)

    def _guarded(self, run: Callable[[], list[cmd.Command]]) -> list[cmd.Command]:
        if self._broken is not None:
            raise StaleInstanceError(
                f"this instance failed earlier ({self._broken!r}); evict it and replay"
            ) from self._broken
        try:
            return run()
        except (WorkflowTaskError, StaleInstanceError) as exc:
            self._broken = exc
            raise
        except Exception as exc:  # anything else still fails the task, with its failure
            self._broken = exc
            raise task_error(f"workflow {self._definition.name}: {exc!r}", exc) from exc
        except BaseException as exc:
            self._broken = exc
            raise

    def _activate(self, events: list[ev.Event]) -> list[cmd.Command]:
        result: list[cmd.Command] = []
        for step in self._reader.feed(events):
            if isinstance(step, Verify):
                self._verify(self._unverified, step.recorded, step.completed_event_id)
                self._unverified = []
                continue
            emitted = self._run(step)
            if step.replaying:
                assert emitted is not None  # a replayed activation never suspends
                self._verify(emitted, step.recorded, step.completed_event_id)
            else:
                result = self._finish_live(emitted)
        return result

    def _finish_live(self, emitted: list[Emitted] | None) -> list[cmd.Command]:
        """The live activation's commands; none yet while it waits for local activities."""
        self._suspended = emitted is None
        if emitted is None:
            return []
        self._unverified = emitted
        return [item.command for item in emitted]

    def _verify(
        self, emitted: list[Emitted], recorded: list[ev.Event], completed: int, prefix: bool = False
    ) -> None:
        for event in recorded:
            self._index.register(event)
        index, resolved = self._index, self._reader.resolved
        check_commands(emitted, recorded, index, self._info, completed, resolved, prefix=prefix)

    def _run(self, activation: Activation) -> list[Emitted] | None:
        self._replaying = activation.replaying
        self._recorded_now = activation.recorded
        self._completed_now = activation.completed_event_id
        self._now = activation.time
        self._loop.set_time(activation.time.timestamp())
        if self._closed:
            return []
        for job in activation.jobs:
            self._apply(job)
        return self._settle(activation.replaying)

    def _settle(self, replaying: bool) -> list[Emitted] | None:
        """Run until quiescent; waiting local activities are resolved from the history
        (replay) or suspend the activation (live: None, the worker runs them)."""
        while True:
            self._loop.run_until_quiescent(self._conditions.check)
            if self._loop.errors:
                error = self._loop.errors[0]
                raise task_error(f"workflow callback raised {error!r}", error) from error
            due = self._locals.due
            if not due:
                break
            if not replaying:
                return None
            if not self._resolve_recorded_locals():
                raise NondeterminismError(
                    f"workflow {self._info.workflow_id!r}: local activity {due[0].activity_type} "
                    f"(seq {due[0].seq}) has no recorded outcome in this workflow task: the code "
                    "calls a local activity that the history does not have",
                    workflow_id=self._info.workflow_id,
                )
        self._updates.reject_waiting()
        emitted = self._buffer.take()
        close = run_outcome(
            self._root, self._handler_error, self._cancel_requested, self._definition.name
        )
        if close is not None:
            emitted.append(Emitted(close))
            self._closed = True
        return emitted

    def _resolve_recorded_locals(self) -> bool:
        """Replay: resolve the waiting local activities from this activation's markers; True if
        any was. A marker of another activity type is a ``NondeterminismError`` at the first
        command that differs from the history: an earlier one, or that marker."""
        try:
            return self._locals.resolve_recorded(self._recorded_now)
        except LocalActivityMismatch as mismatch:
            recorded, completed = self._recorded_now, self._completed_now
            self._verify(self._buffer.take(), recorded, completed, prefix=True)
            raise_mismatch(mismatch.attempted, mismatch.recorded, self._info, completed)

    def close(self) -> None:
        """Evict: cancel every task, run them to their end, and report any that refuses to end."""
        self._buffer.enabled = False
        for task in self._loop.tasks:
            task.cancel()
        try:
            self._loop.run_until_quiescent()
        except BaseException:  # eviction must not fail; the code is being dropped anyway
            _log.exception("error while evicting %s", self._info.workflow_id)
        leftover = self._loop.tasks
        if leftover:
            _log.error(
                "evicted workflow %s (run %s) left %d task(s) running after cancellation "
                "(code that swallows CancelledError?): %s",
                self._info.workflow_id,
                self._info.run_id,
                len(leftover),
                sorted(t.get_name() for t in leftover),
            )
        self._loop.close()

    # ------------------------------------------------------------ jobs

    def _apply(self, job: ev.Event) -> None:
        a = job.attributes
        if isinstance(a, ev.WorkflowStarted):
            self._start(a)
        elif isinstance(a, ev.SignalReceived):
            self._signals.deliver(a.signal_name, a.input)
        elif isinstance(a, ev.UpdateAccepted):
            self._updates.accept(a)
        elif isinstance(
            a, ev.ActivityCompleted | ev.ActivityFailed | ev.ActivityTimedOut | ev.ActivityCanceled
        ):
            self._calls.resolve_activity(a)
        elif isinstance(a, ev.TimerFired):
            self._calls.fire_timer(a)
        elif isinstance(
            a,
            ev.ChildWorkflowStarted
            | ev.ChildWorkflowStartFailed
            | ev.ChildWorkflowCompleted
            | ev.ChildWorkflowFailed,
        ):
            self._calls.resolve_child(a)
        elif isinstance(a, ev.ExternalSignalResolved):
            self._calls.resolve_external_signal(a)
        elif isinstance(a, ev.WorkflowCancelRequested):
            self._cancel_requested = True
            if self._root is not None and not self._root.done():
                self._loop.call_soon(self._root.cancel)

    def _start(self, started: ev.WorkflowStarted) -> None:
        self._random = random.Random(started.random_seed)
        try:
            args = from_payloads(started.input, self._definition.arg_hints)
        except PayloadEncodingError as exc:
            raise task_error(
                f"cannot decode the input of workflow {self._definition.name}: {exc}", exc
            ) from exc
        coroutine = self._definition.fn(*args)
        self._root = self._loop.create_task(coroutine, name=self._loop.name)

    # ------------------------------------------------------------ WorkflowRuntime

    def info(self) -> WorkflowInfo:
        """The run being executed."""
        return self._info

    def now(self) -> datetime:
        """The current workflow task's time."""
        return self._now

    def random(self) -> random.Random:
        """The run's seeded generator."""
        return self._random

    def uuid4(self) -> uuid.UUID:
        """A UUID4 from the seeded generator."""
        return uuid.UUID(int=self._random.getrandbits(128), version=4)

    def is_replaying(self) -> bool:
        """True while re-running a recorded workflow task."""
        return self._replaying

    def start_activity(
        self, name: str, args: Sequence[Any], options: ActivityOptions, return_hint: Any
    ) -> Coroutine[Any, Any, Any]:
        """Schedule activity ``name`` now (seq allocated at the call); await the result."""
        return self._calls.start_activity(name, args, options, return_hint)

    def start_local_activity(
        self,
        name: str,
        definition: ActivityDefinition | None,
        args: Sequence[Any],
        options: ActivityOptions,
        return_hint: Any,
    ) -> Coroutine[Any, Any, Any]:
        """Ask the worker to run a local activity (``_local.py``); await its recorded outcome."""
        request = LocalActivityRequest(
            seq=self._calls.next_seq("local_activity"),
            activity_type=name,
            definition=definition,
            input=encode_arguments(name, args),
            options=options,
            workflow=self._info,
            scheduled_time=self._now,
            call_site=call_site(),
        )
        return self._locals.start(self._loop, request, return_hint)

    def start_timer(self, duration: timedelta, fire: Callable[[], None]) -> int:
        """``TimerService``: record a StartTimer; ``fire`` runs on TimerFired."""
        return self._calls.start_timer(duration, fire)

    def cancel_timer(self, seq: int) -> None:
        """``TimerService``: cancel timer ``seq`` (drop its StartTimer if not sent yet)."""
        self._calls.cancel_timer(seq)

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
        return self._calls.start_child(
            workflow_type,
            args,
            workflow_id=workflow_id,
            task_queue=task_queue,
            execution_timeout=execution_timeout,
            run_timeout=run_timeout,
            parent_close_policy=parent_close_policy,
            retry_policy=retry_policy,
            return_hint=return_hint,
        )

    def signal_external(
        self, workflow_id: str, run_id: str, name: str, args: Sequence[Any]
    ) -> Coroutine[Any, Any, None]:
        """Signal another workflow run (seq allocated at the call); await its delivery."""
        return self._calls.signal_external(workflow_id, run_id, name, args)

    def wait_condition(
        self, predicate: Callable[[], bool], timeout: timedelta | None
    ) -> Coroutine[Any, Any, None]:
        """Resume when ``predicate()`` holds (checked whenever the loop goes idle)."""
        return self._conditions.wait(predicate, timeout)

    def wait_signal(self, name: str, timeout: timedelta | None) -> Coroutine[Any, Any, Any]:
        """The next buffered signal ``name``, else wait for one (``_signals.py``)."""
        return self._signals.wait_signal(name, timeout)

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        """A signal or update handler's task ended: its error (a bug) decides the outcome."""
        if task.cancelled() or self._handler_error is not None:
            return
        error = task.exception()
        if error is not None:
            self._handler_error = error

    def set_signal_handler(self, name: str, handler: Callable[..., Any] | None) -> None:
        """Register (or remove) a signal handler; buffered signals go to it now, in order.
        Refused in a read-only call (a query or an update validator)."""
        self._queries.refuse_in_read_only(f"set the handler of signal {name!r}")
        self._signals.set_signal_handler(name, handler)

    def set_query_handler(self, name: str, handler: Callable[..., Any] | None) -> None:
        """Register (or remove) a query handler; refused in a read-only call."""
        self._queries.refuse_in_read_only(f"set the handler of query {name!r}")
        self._queries.set(name, handler)

    def set_update_handler(
        self, name: str, handler: Callable[..., Any] | None, validator: Callable[..., Any] | None
    ) -> None:
        """Register (or remove) an update handler and its validator (``_updates.py``); refused
        in a read-only call."""
        self._queries.refuse_in_read_only(f"set the handler of update {name!r}")
        self._updates.set(name, handler, validator)

    def validate_update(self, name: str, args: Sequence[Payload]) -> None:
        """Raise unless update ``name`` would be accepted now; read-only, like a query."""
        self._updates.validate(name, args, self._queries.read_only)

    def query(self, name: str, args: Sequence[Payload]) -> Payload:
        """Answer query ``name`` from the current state; read-only (``_queries.py``)."""
        return self._queries.answer(name, args)

    def _save_state(self) -> Callable[[], None]:
        """Save what a read-only call may change (seqs, the random state, patch decisions);
        the function returned puts it back."""
        calls = self._calls.save()
        random_state = self._random.getstate()
        patches = self._patches.save()

        def restore() -> None:
            self._calls.restore(calls)
            self._random.setstate(random_state)
            self._patches.restore(patches)

        return restore

    def stack(self) -> str:
        """Every coroutine of the workflow and the line of workflow code it awaits at."""
        return workflow_stack(self._info, self._loop.tasks, self._root)

    def frames(self) -> list[tuple[str, FrameType]]:
        """Each waiting coroutine and its innermost workflow-code frame (for debuggers)."""
        return workflow_frames(self._loop.tasks, self._root)

    def patched(self, patch_id: str) -> bool:
        """True (and recorded) on new code paths; from the history while replaying."""
        return self._patches.patched(patch_id, self._replaying, self._recorded_now)

    def deprecate_patch(self, patch_id: str) -> None:
        """Record the patch marker on new runs; while replaying, consume it if the history has
        it (a history without it is no error here: the code has only the patched path now)."""
        self.patched(patch_id)

    def continue_as_new(
        self, args: Sequence[Any], workflow_type: str | None, task_queue: str | None
    ) -> NoReturn:
        """Raise the private request that closes the run as continued-as-new."""
        command = cmd.ContinueAsNew(
            workflow_type=workflow_type or self._info.workflow_type,
            task_queue=task_queue or self._info.task_queue,
            input=encode_arguments("continue_as_new", args),
        )
        raise ContinueAsNewRequest(command)
