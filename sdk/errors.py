"""The SDK's errors, and the mapping between exceptions and ``Failure`` values.

    ChronicleError
    ├── FailureError                 carries a Failure; uncaught in workflow code: FAILS THE RUN
    │   ├── ApplicationError         raised by user code (workflow or activity)
    │   ├── ActivityError            an activity failed for good; .cause says why
    │   ├── ChildWorkflowError       a child workflow failed; .cause says why
    │   ├── TimeoutFailure           a timeout fired (.timeout_type), e.g. an ActivityError's cause
    │   ├── CancelledFailure         the operation was cancelled
    │   ├── TerminatedFailure        the run was terminated
    │   └── ServerFailure            the server gave up on something
    ├── WorkflowRunError             about one run: .workflow_id, .run_id, .cause
    │   ├── WorkflowFailed           handle.result(): the run failed (.cause: a FailureError)
    │   ├── WorkflowCancelled        handle.result(): the run was cancelled
    │   ├── WorkflowTerminated       handle.result(): the run was terminated
    │   ├── WorkflowTimedOut         handle.result(): the run or execution timeout fired
    │   ├── WorkflowAlreadyStarted   client.start(): the id is in use
    │   └── WorkflowNotFound         no such workflow (or run)
    ├── ActivityNotFound             a task token names no pending attempt (done, stale, used)
    ├── StaleInstanceError           a cached WorkflowInstance cannot continue: evict and replay
    └── WorkflowTaskError            the workflow TASK fails (retried; the run stays open)
        └── NondeterminismError      the code no longer matches its history

    CompleteAsyncError (BaseException)  activity.raise_complete_async() control flow

Any exception other than a ``FailureError`` escaping workflow code is a bug: it fails the workflow
*task*, which the server retries, so a fixed deployment can carry the run on.
"""

from __future__ import annotations

import asyncio
import traceback
from typing import Any

from chronicle.history.events import WorkflowTaskFailedCause
from chronicle.history.payloads import PayloadEncodingError, from_payload, to_payloads
from chronicle.history.values import Failure, FailureKind, TimeoutType

__all__ = [
    "ActivityError",
    "ActivityNotFound",
    "ApplicationError",
    "CancelledFailure",
    "ChildWorkflowError",
    "ChronicleError",
    "CompleteAsyncError",
    "FailureError",
    "NondeterminismError",
    "ServerFailure",
    "StaleInstanceError",
    "TerminatedFailure",
    "TimeoutFailure",
    "WorkflowAlreadyStarted",
    "WorkflowCancelled",
    "WorkflowFailed",
    "WorkflowNotFound",
    "WorkflowRunError",
    "WorkflowTaskError",
    "WorkflowTerminated",
    "WorkflowTimedOut",
    "exception_to_failure",
    "failure_to_exception",
]


class ChronicleError(Exception):
    """Base of every Chronicle error."""


# ---------------------------------------------------------------- failures


class FailureError(ChronicleError):
    """An error that is also a ``Failure``; uncaught in workflow code it fails the workflow.

    ``failure`` is the recorded failure this exception was rebuilt from (so re-encoding is
    lossless), or ``exception_to_failure(self)`` for one raised here.
    """

    kind: FailureKind = FailureKind.APPLICATION

    def __init__(self, message: str, *, failure: Failure | None = None) -> None:
        super().__init__(message)
        self.message = message
        self._failure = failure

    @property
    def failure(self) -> Failure:
        """This error as a ``Failure`` value (with its cause chain)."""
        return self._failure if self._failure is not None else exception_to_failure(self)

    @property
    def remote_stack(self) -> str:
        """The stack recorded where the failure happened (empty if raised in this process)."""
        return self._failure.stack if self._failure is not None else ""

    def __str__(self) -> str:
        return self.message


class ApplicationError(FailureError):
    """An error raised by user code: ``ApplicationError(message, non_retryable=False,
    details=None)``, or with several details ``ApplicationError(message, *details, type=...)``.

    ``type`` (default: the class name) is what ``RetryPolicy.non_retryable_error_types`` matches;
    ``non_retryable=True`` stops activity retries at once. ``details=value`` adds one detail
    after the positional ones (``None``: none); ``.details`` is always the tuple of them all,
    as rebuilt from the recorded failure (any encodable values).
    """

    def __init__(
        self,
        message: str,
        *args: Any,
        type: str | None = None,
        non_retryable: bool = False,
        details: Any = None,
        failure: Failure | None = None,
    ) -> None:
        super().__init__(message, failure=failure)
        self.details: tuple[Any, ...] = args if details is None else (*args, details)
        self.type: str = type or self.__class__.__name__
        self.non_retryable = non_retryable


class ActivityError(FailureError):
    """An activity failed after its retries, timed out, or was cancelled.

    ``cause`` tells which: an ``ApplicationError`` (its ``type``/``message`` as raised by the
    activity), a ``TimeoutFailure`` (``.timeout_type``) or a ``CancelledFailure``.
    """

    kind = FailureKind.ACTIVITY

    def __init__(
        self,
        message: str,
        *,
        cause: FailureError | None = None,
        activity_type: str = "",
        activity_id: str = "",
        attempt: int = 0,
        failure: Failure | None = None,
    ) -> None:
        super().__init__(message, failure=failure)
        self.cause = cause
        self.__cause__ = cause
        self.activity_type = activity_type
        self.activity_id = activity_id
        self.attempt = attempt


class ChildWorkflowError(FailureError):
    """A child workflow failed, was cancelled, terminated or timed out; ``cause`` says which."""

    kind = FailureKind.CHILD_WORKFLOW

    def __init__(
        self,
        message: str,
        *,
        cause: FailureError | None = None,
        workflow_type: str = "",
        workflow_id: str = "",
        run_id: str = "",
        failure: Failure | None = None,
    ) -> None:
        super().__init__(message, failure=failure)
        self.cause = cause
        self.__cause__ = cause
        self.workflow_type = workflow_type
        self.workflow_id = workflow_id
        self.run_id = run_id


class TimeoutFailure(FailureError):
    """A timeout fired; ``timeout_type`` says which (start-to-close, heartbeat, …)."""

    kind = FailureKind.TIMEOUT

    def __init__(
        self,
        message: str,
        *,
        timeout_type: TimeoutType | None = None,
        failure: Failure | None = None,
    ) -> None:
        super().__init__(message, failure=failure)
        self.timeout_type = timeout_type


class CancelledFailure(FailureError):
    """The operation (activity, child, workflow) was cancelled."""

    kind = FailureKind.CANCELLED


class TerminatedFailure(FailureError):
    """The run was terminated from outside."""

    kind = FailureKind.TERMINATED


class ServerFailure(FailureError):
    """The server failed the operation (for example a child whose id was in use)."""

    kind = FailureKind.SERVER


# ---------------------------------------------------------------- client side


class WorkflowRunError(ChronicleError):
    """Base of the errors about one run (``handle.result()``, start, lookup): a message, the
    run's ``workflow_id``/``run_id``, and an optional ``cause``."""

    def __init__(
        self,
        message: str = "",
        *,
        cause: BaseException | None = None,
        workflow_id: str = "",
        run_id: str = "",
    ) -> None:
        super().__init__(message or self.__class__.__name__)
        self.cause = cause
        self.__cause__ = cause
        self.workflow_id = workflow_id
        self.run_id = run_id


class WorkflowFailed(WorkflowRunError):
    """``handle.result()``: the run failed; ``cause`` is the workflow's ``FailureError``."""


class WorkflowCancelled(WorkflowRunError):
    """``handle.result()``: the run was cancelled."""


class WorkflowTerminated(WorkflowRunError):
    """``handle.result()``: the run was terminated (``cause`` may carry the reason)."""


class WorkflowTimedOut(WorkflowRunError):
    """``handle.result()``: the run's or execution's timeout fired."""


class WorkflowAlreadyStarted(WorkflowRunError):
    """``client.start()``: a running workflow already uses this id."""


class WorkflowNotFound(WorkflowRunError):
    """No workflow (or no such run) with this id in the namespace."""


class ActivityNotFound(ChronicleError):
    """``client.complete_activity`` / ``fail_activity`` / ``heartbeat_activity``: the task token
    names no pending attempt (the activity already completed, timed out, was retried or
    cancelled, or the token was already used). Nothing was recorded."""


_RunError = WorkflowRunError  # the first name of WorkflowRunError, kept for existing imports


class StaleInstanceError(ChronicleError):
    """A cached ``WorkflowInstance`` saw that its last answer was not recorded (task failed or
    timed out): it cannot continue. Evict it and replay from the full history."""


class WorkflowTaskError(ChronicleError):
    """The workflow task must fail (not the workflow): a bug, an undecodable input, …

    The worker reports ``cause`` and ``failure`` with FailWorkflowTask; the server retries the
    task, so the run stays open until the code is fixed. After this error the instance that
    raised it is unusable: evict it.
    """

    def __init__(self, message: str, *, cause: WorkflowTaskFailedCause, failure: Failure) -> None:
        super().__init__(message)
        self.cause = cause
        self.failure = failure


class NondeterminismError(WorkflowTaskError):
    """Workflow code did something other than what its history recorded.

    The message names the workflow id, run id, event id, what the history recorded and what the
    code attempted, with both call sites (``file:line in function``).
    """

    def __init__(
        self,
        message: str,
        *,
        workflow_id: str = "",
        run_id: str = "",
        event_id: int = 0,
        recorded: str = "",
        attempted: str = "",
    ) -> None:
        failure = Failure(
            message=message,
            type="NondeterminismError",
            stack="".join(traceback.format_stack(limit=20)),
        )
        super().__init__(message, cause=WorkflowTaskFailedCause.NONDETERMINISM, failure=failure)
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.event_id = event_id
        self.recorded = recorded
        self.attempted = attempted


class CompleteAsyncError(BaseException):
    """Raised by ``activity.raise_complete_async()``: the worker must not complete the task."""


# ---------------------------------------------------------------- exception ⇄ Failure


def _stack_of(exc: BaseException) -> str:
    return "".join(traceback.format_tb(exc.__traceback__)) if exc.__traceback__ else ""


def _cause_of(exc: BaseException) -> BaseException | None:
    if isinstance(exc, ActivityError | ChildWorkflowError):
        return exc.cause
    if exc.__cause__ is not None:
        return exc.__cause__
    return None if exc.__suppress_context__ else exc.__context__


def exception_to_failure(exc: BaseException, _depth: int = 0) -> Failure:
    """Turn an exception (and its cause chain) into a ``Failure``.

    ``type`` is the class name (an ``ApplicationError``'s ``type``); ``ApplicationError``
    contributes ``non_retryable`` and ``details``; timeouts their ``timeout_type``. A rebuilt
    ``FailureError`` re-encodes to the failure it came from.
    """
    if isinstance(exc, FailureError) and exc._failure is not None:
        return exc._failure
    cause_exc = _cause_of(exc) if _depth < 20 else None
    cause = exception_to_failure(cause_exc, _depth + 1) if cause_exc is not None else None
    message = str(exc) if not isinstance(exc, FailureError) else exc.message
    kind = FailureKind.APPLICATION
    details: tuple[Any, ...] = ()
    non_retryable = False
    timeout_type: TimeoutType | None = None
    failure_type = exc.__class__.__name__
    if isinstance(exc, ApplicationError):
        failure_type, non_retryable, details = exc.type, exc.non_retryable, exc.details
    elif isinstance(exc, ActivityError):
        kind, details = FailureKind.ACTIVITY, (exc.activity_type, exc.activity_id, exc.attempt)
    elif isinstance(exc, ChildWorkflowError):
        kind, details = FailureKind.CHILD_WORKFLOW, (exc.workflow_type, exc.workflow_id, exc.run_id)
    elif isinstance(exc, TimeoutFailure):
        kind, timeout_type = FailureKind.TIMEOUT, exc.timeout_type
    elif isinstance(exc, FailureError):
        kind = exc.kind
    elif isinstance(exc, asyncio.CancelledError):
        kind = FailureKind.CANCELLED
    try:
        encoded = to_payloads(details)
    except PayloadEncodingError as err:
        encoded = to_payloads([f"<details not encodable: {err}>"])
    return Failure(
        message=message,
        type=failure_type,
        kind=kind,
        stack=_stack_of(exc),
        non_retryable=non_retryable,
        details=encoded,
        cause=cause,
        timeout_type=timeout_type,
    )


def _details(failure: Failure) -> list[Any]:
    out: list[Any] = []
    for payload in failure.details:
        try:
            out.append(from_payload(payload))
        except PayloadEncodingError:
            out.append(payload)
    return out


def failure_to_exception(failure: Failure) -> FailureError:
    """Rebuild the ``FailureError`` (with causes) that a ``Failure`` describes.

    The result remembers ``failure``: ``exception_to_failure`` of it gives ``failure`` back.
    """
    cause = failure_to_exception(failure.cause) if failure.cause is not None else None
    details = _details(failure)
    exc: FailureError
    if failure.kind is FailureKind.ACTIVITY:
        a_type, a_id, attempt = ([*details, "", "", 0])[:3]
        exc = ActivityError(
            failure.message,
            cause=cause,
            activity_type=str(a_type),
            activity_id=str(a_id),
            attempt=int(attempt or 0),
            failure=failure,
        )
    elif failure.kind is FailureKind.CHILD_WORKFLOW:
        w_type, w_id, run_id = ([*details, "", "", ""])[:3]
        exc = ChildWorkflowError(
            failure.message,
            cause=cause,
            workflow_type=str(w_type),
            workflow_id=str(w_id),
            run_id=str(run_id),
            failure=failure,
        )
    elif failure.kind is FailureKind.TIMEOUT:
        exc = TimeoutFailure(failure.message, timeout_type=failure.timeout_type, failure=failure)
    elif failure.kind is FailureKind.CANCELLED:
        exc = CancelledFailure(failure.message, failure=failure)
    elif failure.kind is FailureKind.TERMINATED:
        exc = TerminatedFailure(failure.message, failure=failure)
    elif failure.kind is FailureKind.SERVER:
        exc = ServerFailure(failure.message, failure=failure)
    else:
        exc = ApplicationError(
            failure.message,
            *details,
            type=failure.type or None,
            non_retryable=failure.non_retryable,
            failure=failure,
        )
    if cause is not None and exc.__cause__ is None:
        exc.__cause__ = cause
    return exc
