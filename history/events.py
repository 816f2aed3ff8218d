"""History events: one frozen dataclass of attributes per event type, and ``Event`` around it.

A run's history is the list of its events with ids 1, 2, 3 … and no gaps. The class name of an
attributes dataclass *is* its event type name (``ActivityScheduled`` …); ``EventType`` lists them.
Events that answer a command refer to the event that recorded the command by its id
(``scheduled_event_id``, ``started_event_id``, ``initiated_event_id``); command-events carry the
SDK's ``seq`` for that kind of operation, so replay can tie them back to the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import get_args

from chronicle.history.values import CallSite, Failure, Payload, RetryPolicy, TimeoutType

# ---------------------------------------------------------------- workflow lifecycle


@dataclass(frozen=True, slots=True, kw_only=True)
class ParentRef:
    """The parent of a child workflow run."""

    namespace: str
    workflow_id: str
    run_id: str
    initiated_event_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowStarted:
    """The run began. Always event 1."""

    workflow_type: str
    task_queue: str
    input: tuple[Payload, ...] = ()
    workflow_task_timeout: timedelta = timedelta(seconds=10)
    execution_timeout: timedelta | None = None
    run_timeout: timedelta | None = None
    retry_policy: RetryPolicy | None = None
    attempt: int = 1
    random_seed: int = 0
    memo: dict[str, Payload] = field(default_factory=dict)
    search_attributes: dict[str, Payload] = field(default_factory=dict)
    parent: ParentRef | None = None
    first_run_id: str = ""
    continued_from_run_id: str | None = None
    identity: str = ""
    request_id: str = ""
    start_delay: timedelta | None = None
    """The first workflow task is scheduled only after this delay (a server timer)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowCompleted:
    """The workflow function returned."""

    result: Payload | None = None
    workflow_task_completed_event_id: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowFailed:
    """The workflow function raised an application failure.

    ``new_run_id`` is set when the run's retry policy retries it: the run (attempt + 1, same
    input) that carries the workflow on, as after a continue-as-new.
    """

    failure: Failure
    workflow_task_completed_event_id: int = 0
    new_run_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowCanceled:
    """The workflow accepted a cancellation request and closed."""

    details: tuple[Payload, ...] = ()
    workflow_task_completed_event_id: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowTerminated:
    """The run was closed from outside without running workflow code."""

    reason: str = ""
    identity: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowTimedOut:
    """The run or execution timeout fired."""

    timeout: str = "run"


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowContinuedAsNew:
    """The run closed and a new run of the same workflow id starts with a fresh history."""

    new_run_id: str
    workflow_type: str
    task_queue: str
    input: tuple[Payload, ...] = ()
    workflow_task_completed_event_id: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowCancelRequested:
    """Someone asked the run to cancel; delivered to the workflow as ``CancelledError``."""

    reason: str = ""
    identity: str = ""
    request_id: str = ""


# ---------------------------------------------------------------- workflow tasks


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowTaskScheduled:
    """A workflow task is queued: the workflow has new events to react to."""

    task_queue: str
    attempt: int = 1
    start_to_close_timeout: timedelta = timedelta(seconds=10)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowTaskStarted:
    """A worker took the workflow task. Replay runs the workflow code up to each of these."""

    scheduled_event_id: int
    identity: str = ""
    request_id: str = ""
    """The request id of the call that started the task for its worker: the completion that
    started it eagerly, or the poll that took it (a worker that lost that call's answer
    releases the task by it); empty when the call named none."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowTaskCompleted:
    """The worker answered the task; the command-events that follow are its commands."""

    scheduled_event_id: int
    started_event_id: int
    identity: str = ""
    sdk_flags: tuple[int, ...] = ()


class WorkflowTaskFailedCause(StrEnum):
    """Why a workflow task failed (the run stays open and the task is retried)."""

    WORKFLOW_ERROR = "workflow_error"
    NONDETERMINISM = "nondeterminism"
    UNKNOWN_WORKFLOW_TYPE = "unknown_workflow_type"
    BAD_COMMAND = "bad_command"
    DEADLOCK = "deadlock"
    UNHANDLED_EVENTS = "unhandled_events"


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowTaskFailed:
    """The worker could not run the workflow code to a decision; the task will be retried."""

    scheduled_event_id: int
    started_event_id: int
    cause: WorkflowTaskFailedCause = WorkflowTaskFailedCause.WORKFLOW_ERROR
    failure: Failure | None = None
    identity: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowTaskTimedOut:
    """The worker that took the task did not answer in time (it may have died)."""

    scheduled_event_id: int
    started_event_id: int


# ---------------------------------------------------------------- activities


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityScheduled:
    """The workflow scheduled an activity. Retries of it write no events (see ``activities``)."""

    seq: int
    activity_id: str
    activity_type: str
    task_queue: str
    input: tuple[Payload, ...] = ()
    schedule_to_close_timeout: timedelta | None = None
    schedule_to_start_timeout: timedelta | None = None
    start_to_close_timeout: timedelta | None = None
    heartbeat_timeout: timedelta | None = None
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    workflow_task_completed_event_id: int = 0
    call_site: CallSite | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityCompleted:
    """An attempt of the activity returned."""

    scheduled_event_id: int
    result: Payload | None = None
    attempt: int = 1
    identity: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityFailed:
    """The activity failed for good: non-retryable, or out of attempts."""

    scheduled_event_id: int
    failure: Failure
    attempt: int = 1
    identity: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityTimedOut:
    """A timeout of the activity fired and no retry remains (``timeout_type`` says which)."""

    scheduled_event_id: int
    failure: Failure
    timeout_type: TimeoutType = TimeoutType.START_TO_CLOSE
    attempt: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityCancelRequested:
    """The workflow asked a scheduled activity to cancel."""

    scheduled_event_id: int
    workflow_task_completed_event_id: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityCanceled:
    """The activity is cancelled (acknowledged by the activity, or it had not started)."""

    scheduled_event_id: int
    details: tuple[Payload, ...] = ()
    attempt: int = 1


# ---------------------------------------------------------------- timers


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerStarted:
    """A durable timer; it fires ``duration`` after this event's time."""

    seq: int
    duration: timedelta
    workflow_task_completed_event_id: int = 0
    call_site: CallSite | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerFired:
    """The timer started at ``started_event_id`` fell due."""

    started_event_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerCanceled:
    """The workflow cancelled the timer started at ``started_event_id`` before it fired."""

    started_event_id: int
    workflow_task_completed_event_id: int = 0


# ---------------------------------------------------------------- signals, updates, markers


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalReceived:
    """A signal arrived; recorded in arrival order."""

    signal_name: str
    input: tuple[Payload, ...] = ()
    identity: str = ""
    request_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateAccepted:
    """An update passed its validator; its handler runs from here."""

    update_id: str
    update_name: str
    input: tuple[Payload, ...] = ()
    identity: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateCompleted:
    """The update handler returned (``result``) or raised (``failure``)."""

    update_id: str
    accepted_event_id: int
    result: Payload | None = None
    failure: Failure | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MarkerRecorded:
    """A recorded fact: a patch (``marker_name="patch"``) or a local activity's outcome."""

    seq: int
    marker_name: str
    details: dict[str, Payload] = field(default_factory=dict)
    failure: Failure | None = None
    workflow_task_completed_event_id: int = 0
    call_site: CallSite | None = None


# ---------------------------------------------------------------- child workflows and external


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildWorkflowInitiated:
    """The workflow asked to start a child workflow.

    ``retry_policy`` becomes the child's ``WorkflowStarted.retry_policy``: a failed run of the
    child is retried as a new run of its chain, and the parent is told only the chain's end.
    """

    seq: int
    workflow_id: str
    workflow_type: str
    task_queue: str
    input: tuple[Payload, ...] = ()
    parent_close_policy: str = "terminate"
    execution_timeout: timedelta | None = None
    run_timeout: timedelta | None = None
    retry_policy: RetryPolicy | None = None
    workflow_task_completed_event_id: int = 0
    call_site: CallSite | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildWorkflowStarted:
    """The child run started."""

    initiated_event_id: int
    run_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildWorkflowStartFailed:
    """The child could not start (its id is in use)."""

    initiated_event_id: int
    failure: Failure


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildWorkflowCompleted:
    """The child run completed."""

    initiated_event_id: int
    result: Payload | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ChildWorkflowFailed:
    """The child run failed, was cancelled, terminated or timed out (``failure.kind`` says)."""

    initiated_event_id: int
    failure: Failure


@dataclass(frozen=True, slots=True, kw_only=True)
class ExternalSignalInitiated:
    """The workflow asked to signal another workflow."""

    seq: int
    workflow_id: str
    run_id: str = ""
    signal_name: str = ""
    input: tuple[Payload, ...] = ()
    workflow_task_completed_event_id: int = 0
    call_site: CallSite | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExternalSignalResolved:
    """The signal to another workflow was delivered (``failure`` unset) or not."""

    initiated_event_id: int
    failure: Failure | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExternalCancelInitiated:
    """The workflow asked another workflow (e.g. a child) to cancel."""

    seq: int
    workflow_id: str
    run_id: str = ""
    workflow_task_completed_event_id: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ExternalCancelResolved:
    """The cancellation request reached the other workflow (``failure`` unset) or not."""

    initiated_event_id: int
    failure: Failure | None = None


EventAttributes = (
    WorkflowStarted
    | WorkflowCompleted
    | WorkflowFailed
    | WorkflowCanceled
    | WorkflowTerminated
    | WorkflowTimedOut
    | WorkflowContinuedAsNew
    | WorkflowCancelRequested
    | WorkflowTaskScheduled
    | WorkflowTaskStarted
    | WorkflowTaskCompleted
    | WorkflowTaskFailed
    | WorkflowTaskTimedOut
    | ActivityScheduled
    | ActivityCompleted
    | ActivityFailed
    | ActivityTimedOut
    | ActivityCancelRequested
    | ActivityCanceled
    | TimerStarted
    | TimerFired
    | TimerCanceled
    | SignalReceived
    | UpdateAccepted
    | UpdateCompleted
    | MarkerRecorded
    | ChildWorkflowInitiated
    | ChildWorkflowStarted
    | ChildWorkflowStartFailed
    | ChildWorkflowCompleted
    | ChildWorkflowFailed
    | ExternalSignalInitiated
    | ExternalSignalResolved
    | ExternalCancelInitiated
    | ExternalCancelResolved
)
"""Any event's attributes."""

ATTRIBUTE_CLASSES: tuple[type[EventAttributes], ...] = get_args(EventAttributes)
"""Every attributes class, in declaration order."""

EventType = StrEnum("EventType", {cls.__name__: cls.__name__ for cls in ATTRIBUTE_CLASSES})  # type: ignore[misc]
"""The event type names, e.g. ``EventType.ActivityScheduled == "ActivityScheduled"``."""

ATTRIBUTES_BY_TYPE: dict[str, type[EventAttributes]] = {
    cls.__name__: cls for cls in ATTRIBUTE_CLASSES
}
"""Event type name → its attributes class."""

CLOSE_EVENT_TYPES: frozenset[type[EventAttributes]] = frozenset(
    {
        WorkflowCompleted,
        WorkflowFailed,
        WorkflowCanceled,
        WorkflowTerminated,
        WorkflowTimedOut,
        WorkflowContinuedAsNew,
    }
)
"""Events that close a run; nothing follows them."""

COMMAND_EVENT_TYPES: frozenset[type[EventAttributes]] = frozenset(
    {
        ActivityScheduled,
        ActivityCancelRequested,
        TimerStarted,
        TimerCanceled,
        MarkerRecorded,
        ChildWorkflowInitiated,
        ExternalSignalInitiated,
        ExternalCancelInitiated,
        UpdateCompleted,
        WorkflowCompleted,
        WorkflowFailed,
        WorkflowCanceled,
        WorkflowContinuedAsNew,
    }
)
"""Events written in answer to a worker's command, right after ``WorkflowTaskCompleted``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One history event: its id (1-based, no gaps), when it was appended, and its attributes."""

    id: int
    time: datetime
    attributes: EventAttributes

    @property
    def type(self) -> str:
        """The event type name (the attributes class name)."""
        return type(self.attributes).__name__
