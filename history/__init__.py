"""Chronicle's history layer: events, commands, values, the pure fold, and their JSON form.

No I/O happens here. ``chronicle.history.wire`` is the one module that knows the protobuf API.
"""

from chronicle.history.commands import COMMAND_CLASSES, Command
from chronicle.history.errors import HistoryError, InvalidCommandError, InvalidHistoryError
from chronicle.history.events import ATTRIBUTE_CLASSES, Event, EventAttributes, EventType
from chronicle.history.fold import apply, fold
from chronicle.history.state import RunStatus, WorkflowState
from chronicle.history.values import (
    CallSite,
    Failure,
    FailureKind,
    Payload,
    RetryPolicy,
    TimeoutType,
)

__all__ = [
    "ATTRIBUTE_CLASSES",
    "COMMAND_CLASSES",
    "CallSite",
    "Command",
    "Event",
    "EventAttributes",
    "EventType",
    "Failure",
    "FailureKind",
    "HistoryError",
    "InvalidCommandError",
    "InvalidHistoryError",
    "Payload",
    "RetryPolicy",
    "RunStatus",
    "TimeoutType",
    "WorkflowState",
    "apply",
    "fold",
]
