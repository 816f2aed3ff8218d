"""Local activities: run in the workflow's own worker, recorded as one ``MarkerRecorded``.

``workflow.execute_local_activity(fn, ...)`` asks the instance for a local activity. The live
activation runs until quiescent; if local activities are waiting, the instance *suspends* (the
workflow task stays open), the worker runs them (``run_local_activity``: every attempt with the
activity's retry policy and timeouts, in process), and hands the outcomes back in seq order. Each
resolution emits a ``RecordMarker(marker_name="local_activity")`` carrying the result (or the
failure) and the attempt count; then the code goes on until quiescent again. The workflow task
completes with everything in order, so the history holds exactly one marker per local activity,
however many attempts it took.

Replay never runs the function: the recorded markers of the activation resolve the waiting
local activities in history order at each quiescent point, exactly where the live run resolved
them. A worker killed before its workflow task completed recorded nothing; the next worker
replays up to the open task and runs the local activity again (at-least-once, recorded once).

Markers pair with local activities by seq, and each marker names its activity type
(``details["activity_type"]``): a marker of another type is never handed to the code, which
now calls a different activity there (``LocalActivityMismatch``, reported by the instance as
a ``NondeterminismError``). A marker without the key matches any type.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from chronicle.history import commands as cmd
from chronicle.history import events as ev
from chronicle.history.payloads import from_payload, from_payloads, to_payload
from chronicle.history.values import (
    CallSite,
    Failure,
    FailureKind,
    Payload,
    RetryPolicy,
    TimeoutType,
)
from chronicle.sdk._commands import CommandBuffer, Emitted
from chronicle.sdk._definitions import ActivityDefinition, ActivityOptions
from chronicle.sdk._info import ActivityInfo, WorkflowInfo
from chronicle.sdk.activity import ActivityContext, run_with_context
from chronicle.sdk.errors import (
    ActivityError,
    WorkflowTaskError,
    exception_to_failure,
    failure_to_exception,
)

__all__ = [
    "LOCAL_ACTIVITY_MARKER",
    "LocalActivities",
    "LocalActivityMismatch",
    "LocalActivityRequest",
    "LocalOutcome",
    "local_activity_type",
    "run_local_activities",
    "run_local_activity",
]

LOCAL_ACTIVITY_MARKER = "local_activity"
"""``marker_name`` of the markers that record local activities."""


@dataclass(frozen=True, slots=True)
class LocalOutcome:
    """How a local activity ended: a result or a failure, after ``attempt`` attempts."""

    result: Payload | None = None
    failure: Failure | None = None
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class LocalActivityRequest:
    """A local activity the worker must run (``definition`` is None when called by name)."""

    seq: int
    activity_type: str
    definition: ActivityDefinition | None
    input: tuple[Payload, ...]
    options: ActivityOptions
    workflow: WorkflowInfo
    scheduled_time: datetime
    call_site: CallSite | None = None
    """Where the workflow code called it; recorded on its marker."""


class LocalActivityMismatch(Exception):
    """Replay: the marker recorded at a waiting local activity's seq names another activity
    type. ``attempted`` is the marker the code would record now; ``recorded`` the event."""

    def __init__(self, attempted: Emitted, recorded: ev.Event) -> None:
        super().__init__(f"local activity marker mismatch at event {recorded.id}")
        self.attempted = attempted
        self.recorded = recorded


def local_activity_type(details: Mapping[str, Payload]) -> str | None:
    """The activity type a local-activity marker's ``details`` record; None when they do not
    say (a marker written without the key, or with a value that is not a string)."""
    payload = details.get("activity_type")
    if payload is None:
        return None
    try:
        value = from_payload(payload, str)
    except ValueError:  # PayloadEncodingError: not JSON, or not a string
        return None
    return value if isinstance(value, str) else None


class _Pending:
    def __init__(self, request: LocalActivityRequest, future: asyncio.Future[Any], hint: Any):
        self.request = request
        self.future = future
        self.hint = hint


class LocalActivities:
    """The instance's local activities that wait for an outcome (see the module docstring)."""

    def __init__(self, buffer: CommandBuffer) -> None:
        self._buffer = buffer
        self._waiting: dict[int, _Pending] = {}

    @property
    def due(self) -> list[LocalActivityRequest]:
        """The waiting requests, in seq order."""
        return [self._waiting[seq].request for seq in sorted(self._waiting)]

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        request: LocalActivityRequest,
        return_hint: Any,
    ) -> Coroutine[Any, Any, Any]:
        """Register ``request``; the coroutine returns its result or raises ``ActivityError``."""
        pending = _Pending(request, loop.create_future(), return_hint)
        self._waiting[request.seq] = pending
        return self._wait(pending)

    async def _wait(self, pending: _Pending) -> Any:
        try:
            return await asyncio.shield(pending.future)
        except asyncio.CancelledError:
            # Cancelled before its outcome was recorded: drop it (no marker, live or replay).
            self._waiting.pop(pending.request.seq, None)
            raise

    def resolve(self, seq: int, outcome: LocalOutcome) -> None:
        """Record ``outcome`` (a marker command) and wake the awaiting code."""
        pending = self._waiting.pop(seq, None)
        if pending is None:
            return  # cancelled meanwhile
        request = pending.request
        marker = _marker(request, outcome)
        self._buffer.add(marker, marker.call_site)
        future = pending.future
        if outcome.failure is not None:
            cause = failure_to_exception(outcome.failure)
            what = (
                f"timed out ({outcome.failure.timeout_type})"
                if outcome.failure.kind is FailureKind.TIMEOUT
                else "failed"
            )
            future.set_exception(
                ActivityError(
                    f"local activity {request.activity_type} (seq {seq}) {what}: {cause.message}",
                    cause=cause,
                    activity_type=request.activity_type,
                    activity_id=f"local-{seq}",
                    attempt=outcome.attempt,
                )
            )
            return
        try:
            value = from_payload(outcome.result, pending.hint) if outcome.result else None
        except ValueError as exc:
            future.set_exception(exc)
            return
        future.set_result(value)

    def resolve_recorded(self, recorded: Sequence[ev.Event]) -> bool:
        """Replay: resolve waiting local activities from the activation's recorded markers, in
        history order; True if any was resolved.

        Raises ``LocalActivityMismatch`` at the first marker of a waiting seq that names another
        activity type (the ones before it are resolved)."""
        resolved = False
        for event in recorded:
            a = event.attributes
            if not (
                isinstance(a, ev.MarkerRecorded)
                and a.marker_name == LOCAL_ACTIVITY_MARKER
                and a.seq in self._waiting
            ):
                continue
            request = self._waiting[a.seq].request
            outcome = outcome_of(a)
            recorded_type = local_activity_type(a.details)
            if recorded_type is not None and recorded_type != request.activity_type:
                marker = _marker(request, outcome)
                raise LocalActivityMismatch(Emitted(marker, marker.call_site), event)
            self.resolve(a.seq, outcome)
            resolved = True
        return resolved


def _marker(request: LocalActivityRequest, outcome: LocalOutcome) -> cmd.RecordMarker:
    """The marker command that records ``outcome`` of ``request``."""
    details = {
        "activity_type": to_payload(request.activity_type),
        "attempt": to_payload(outcome.attempt),
    }
    if outcome.failure is None:
        details["result"] = outcome.result or to_payload(None)
    return cmd.RecordMarker(
        seq=request.seq,
        marker_name=LOCAL_ACTIVITY_MARKER,
        details=details,
        failure=outcome.failure,
        call_site=request.call_site,
    )


def outcome_of(marker: ev.MarkerRecorded) -> LocalOutcome:
    """The outcome a local-activity marker recorded."""
    attempt_payload = marker.details.get("attempt")
    attempt = from_payload(attempt_payload, int) if attempt_payload is not None else 1
    if marker.failure is not None:
        return LocalOutcome(failure=marker.failure, attempt=attempt)
    return LocalOutcome(result=marker.details.get("result"), attempt=attempt)


# ---------------------------------------------------------------- running (the worker's side)


def _timeout(kind: TimeoutType) -> Failure:
    return Failure(
        message=f"local activity {kind.value} timeout",
        type="TimeoutError",
        kind=FailureKind.TIMEOUT,
        timeout_type=kind,
    )


async def run_local_activities(
    due: Sequence[LocalActivityRequest],
    activities: Mapping[str, ActivityDefinition],
    executor: Executor,
    *,
    identity: str,
    log: Any,
) -> dict[int, LocalOutcome]:
    """Run the local activities a live activation waits for, concurrently, each by its own
    definition or the one of that type in ``activities`` (those the worker ``identity``
    serves); their outcomes by seq. One of a type the worker does not serve fails the task."""
    definitions: list[ActivityDefinition] = []
    for request in due:
        definition = request.definition or activities.get(request.activity_type)
        if definition is None:
            known = ", ".join(sorted(activities)) or "none"
            message = (
                f"local activity {request.activity_type!r} is not registered on worker "
                f"{identity}; it serves: {known}"
            )
            raise WorkflowTaskError(
                message,
                cause=ev.WorkflowTaskFailedCause.WORKFLOW_ERROR,
                failure=Failure(message=message, type="ActivityNotRegisteredError"),
            )
        definitions.append(definition)
    log.debug("running local activities", count=len(due))
    results = await asyncio.gather(
        *(
            run_local_activity(request, definition, executor, log=log)
            for request, definition in zip(due, definitions, strict=True)
        )
    )
    return {request.seq: outcome for request, outcome in zip(due, results, strict=True)}


async def run_local_activity(
    request: LocalActivityRequest,
    definition: ActivityDefinition,
    executor: Executor,
    *,
    log: Any,
    sleep: Callable[[float], Coroutine[Any, Any, None]] = asyncio.sleep,
) -> LocalOutcome:
    """Run every attempt of ``request`` in this process until one succeeds, the retry policy
    gives up or a timeout ends it: the same rules as a regular activity, without the server."""
    options = request.options
    policy = options.retry or RetryPolicy()
    started = time.monotonic()
    overall = options.schedule_to_close_timeout
    attempt = 1
    while True:
        budget = options.start_to_close_timeout
        kind = TimeoutType.START_TO_CLOSE
        if overall is not None:
            left = overall.total_seconds() - (time.monotonic() - started)
            if budget is None or left < budget.total_seconds():
                budget, kind = timedelta(seconds=max(left, 0.0)), TimeoutType.SCHEDULE_TO_CLOSE
        failure = None
        try:
            result = await asyncio.wait_for(
                _attempt(request, definition, executor, attempt),
                budget.total_seconds() if budget is not None else None,
            )
            return LocalOutcome(result=to_payload(result), attempt=attempt)
        except TimeoutError:
            failure = _timeout(kind)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = exception_to_failure(exc)
        log.info(
            "local activity attempt failed",
            activity_type=request.activity_type,
            attempt=attempt,
            error=failure.message,
        )
        if failure.timeout_type is TimeoutType.SCHEDULE_TO_CLOSE or not policy.allows_retry(
            attempt, failure
        ):
            return LocalOutcome(failure=failure, attempt=attempt)
        delay = policy.backoff(attempt).total_seconds()
        if overall is not None and time.monotonic() - started + delay >= overall.total_seconds():
            return LocalOutcome(failure=failure, attempt=attempt)
        await sleep(delay)
        attempt += 1


async def _attempt(
    request: LocalActivityRequest, definition: ActivityDefinition, executor: Executor, attempt: int
) -> Any:
    args = from_payloads(request.input, definition.arg_hints)
    now = datetime.now(UTC)
    workflow = request.workflow
    info = ActivityInfo(
        activity_id=f"local-{request.seq}",
        activity_type=request.activity_type,
        attempt=attempt,
        workflow_id=workflow.workflow_id,
        run_id=workflow.run_id,
        workflow_type=workflow.workflow_type,
        namespace=workflow.namespace,
        task_queue=workflow.task_queue,
        task_token=b"",
        scheduled_time=request.scheduled_time,
        started_time=now,
        start_to_close_timeout=request.options.start_to_close_timeout,
        is_local=True,
    )
    context = ActivityContext(info=info, heartbeat=_ignore, cancelled=threading.Event())
    return await run_with_context(definition, args, context, executor)


def _ignore(_details: tuple[Any, ...]) -> None:
    """Local activities have no heartbeats: there is no server-side attempt to keep alive."""
