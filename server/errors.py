"""Domain errors of the server; the frontend maps each to one gRPC status (``frontend/_errors``).

ServerError
├── InvalidArgument      a malformed request; ``field`` names the offending field
├── NotFound             no such workflow / run, or a stale task token
├── AlreadyExists        a workflow id that is already running
├── FailedPrecondition   a request the run's current state does not allow
├── DeadlineExceeded     nobody answered in time (a query with no worker polling)
├── Cancelled            the caller gave the call up (a poll its worker released)
└── Unimplemented        a feature this server does not offer yet
"""

from __future__ import annotations


class ServerError(Exception):
    """Base of every error the server reports to callers."""


class InvalidArgument(ServerError):
    """A malformed request; ``field`` names the offending field when there is one."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class NotFound(ServerError):
    """The workflow, run or task does not exist (any more)."""


class AlreadyExists(ServerError):
    """The workflow id is already in use by a running run."""


class FailedPrecondition(ServerError):
    """The request cannot be applied in the run's current state."""


class DeadlineExceeded(ServerError):
    """Nobody answered in time (e.g. no worker polls the queue a query was sent to)."""


class Cancelled(ServerError):
    """The caller gave the call up: a poll its worker released after the call failed on the
    worker's side (``engine/lost_answers.py``)."""


class Unimplemented(ServerError):
    """A feature this server does not implement yet."""
