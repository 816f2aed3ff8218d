"""Commands: what a worker answers a workflow task with.

The server turns each accepted command into exactly one command-event (``ScheduleActivity`` →
``ActivityScheduled`` …), appended right after ``WorkflowTaskCompleted`` in the same transaction.
Each command that starts a durable operation carries the SDK's ``seq`` for its kind (activities,
timers, children, … are numbered separately, 1, 2, 3 … in the order the code called them) and
the ``call_site`` in workflow code that issued it. The class name is the command type name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import get_args

from chronicle.history.values import CallSite, Failure, Payload, RetryPolicy


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleActivity:
    """Schedule an activity task. ``task_queue`` empty: the workflow's own task queue."""

    seq: int
    activity_id: str
    activity_type: str
    task_queue: str = ""
    input: tuple[Payload, ...] = ()
    schedule_to_close_timeout: timedelta | None = None
    schedule_to_start_timeout: timedelta | None = None
    start_to_close_timeout: timedelta | None = None
    heartbeat_timeout: timedelta | None = None
    retry_policy: RetryPolicy | None = None
    call_site: CallSite | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestCancelActivity:
    """Ask the activity scheduled with ``seq`` to cancel."""

    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTimer:
    """Start a durable timer of ``duration`` (> 0)."""

    seq: int
    duration: timedelta
    call_site: CallSite | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelTimer:
    """Cancel the timer started with ``seq``."""

    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordMarker:
    """Record a fact in the history: a patch, a local activity's outcome."""

    seq: int
    marker_name: str
    details: dict[str, Payload] = field(default_factory=dict)
    failure: Failure | None = None
    call_site: CallSite | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StartChildWorkflow:
    """Start a child workflow run. ``retry_policy``: the child's own, as a top-level start's
    (a failed run of the child is retried as a new run of its chain)."""

    seq: int
    workflow_id: str
    workflow_type: str
    task_queue: str = ""
    input: tuple[Payload, ...] = ()
    parent_close_policy: str = "terminate"
    execution_timeout: timedelta | None = None
    run_timeout: timedelta | None = None
    retry_policy: RetryPolicy | None = None
    call_site: CallSite | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalExternalWorkflow:
    """Signal another workflow (a child, or any by id)."""

    seq: int
    workflow_id: str
    run_id: str = ""
    signal_name: str = ""
    input: tuple[Payload, ...] = ()
    call_site: CallSite | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestCancelExternalWorkflow:
    """Ask another workflow to cancel."""

    seq: int
    workflow_id: str
    run_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CompleteUpdate:
    """Record an accepted update's outcome."""

    update_id: str
    result: Payload | None = None
    failure: Failure | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CompleteWorkflow:
    """Close the run with a result."""

    result: Payload | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FailWorkflow:
    """Close the run as failed."""

    failure: Failure


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelWorkflow:
    """Close the run as cancelled (after a cancellation request)."""

    details: tuple[Payload, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ContinueAsNew:
    """Close the run and start a new run of the same workflow id with a fresh history."""

    workflow_type: str = ""
    task_queue: str = ""
    input: tuple[Payload, ...] = ()


Command = (
    ScheduleActivity
    | RequestCancelActivity
    | StartTimer
    | CancelTimer
    | RecordMarker
    | StartChildWorkflow
    | SignalExternalWorkflow
    | RequestCancelExternalWorkflow
    | CompleteUpdate
    | CompleteWorkflow
    | FailWorkflow
    | CancelWorkflow
    | ContinueAsNew
)
"""Any command."""

COMMAND_CLASSES: tuple[type[Command], ...] = get_args(Command)
"""Every command class, in declaration order."""

COMMANDS_BY_TYPE: dict[str, type[Command]] = {cls.__name__: cls for cls in COMMAND_CLASSES}
"""Command type name → its class."""

CLOSE_COMMAND_TYPES: frozenset[type[Command]] = frozenset(
    {CompleteWorkflow, FailWorkflow, CancelWorkflow, ContinueAsNew}
)
"""Commands that close the run; at most one per task, and it must come last."""
