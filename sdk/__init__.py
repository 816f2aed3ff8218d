"""Chronicle's Python SDK, re-exported as ``chronicle`` (the surface in API.md).

Workflows and activities: ``workflow``, ``activity``, ``RetryPolicy``. Talking to the server:
``Client``, ``WorkflowHandle``, ``Worker``. Errors: see ``chronicle.sdk.errors`` for the tree.
"""

from chronicle.history.values import RetryPolicy
from chronicle.sdk._descriptions import (
    PendingActivity,
    PendingChild,
    WorkflowDescription,
    WorkflowExecution,
)
from chronicle.sdk._grpc import (
    InvalidArgumentError,
    NotFoundError,
    RPCError,
    ServerUnavailableError,
    UnimplementedError,
)
from chronicle.sdk._info import ActivityInfo, WorkflowInfo
from chronicle.sdk.activity import ActivityFunction, activity
from chronicle.sdk.client import Client, WorkflowHandle
from chronicle.sdk.errors import (
    ActivityError,
    ActivityNotFound,
    ApplicationError,
    CancelledFailure,
    ChildWorkflowError,
    ChronicleError,
    FailureError,
    NondeterminismError,
    ServerFailure,
    TerminatedFailure,
    TimeoutFailure,
    WorkflowAlreadyStarted,
    WorkflowCancelled,
    WorkflowFailed,
    WorkflowNotFound,
    WorkflowRunError,
    WorkflowTaskError,
    WorkflowTerminated,
    WorkflowTimedOut,
)
from chronicle.sdk.worker import Worker
from chronicle.sdk.workflow import workflow

__all__ = [
    "ActivityError",
    "ActivityFunction",
    "ActivityInfo",
    "ActivityNotFound",
    "ApplicationError",
    "CancelledFailure",
    "ChildWorkflowError",
    "ChronicleError",
    "Client",
    "FailureError",
    "InvalidArgumentError",
    "NondeterminismError",
    "NotFoundError",
    "PendingActivity",
    "PendingChild",
    "RPCError",
    "RetryPolicy",
    "ServerFailure",
    "ServerUnavailableError",
    "TerminatedFailure",
    "TimeoutFailure",
    "UnimplementedError",
    "Worker",
    "WorkflowAlreadyStarted",
    "WorkflowCancelled",
    "WorkflowDescription",
    "WorkflowExecution",
    "WorkflowFailed",
    "WorkflowHandle",
    "WorkflowInfo",
    "WorkflowNotFound",
    "WorkflowRunError",
    "WorkflowTaskError",
    "WorkflowTerminated",
    "WorkflowTimedOut",
    "activity",
    "workflow",
]
