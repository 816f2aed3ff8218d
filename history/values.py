"""Plain values that events, commands and the SDK share: payloads, failures, retry policies.

All are frozen, slotted, keyword-only dataclasses. Their JSON form (see ``codec.py``) is the form
stored in Postgres, carried in the wire's ``attributes`` and written by ``history --json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

JSON_ENCODING = "json/plain"
"""Encoding name of a payload whose ``data`` is UTF-8 JSON text."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Payload:
    """One encoded value: an argument, a result or a detail.

    ``encoding`` says how to read ``data``; ``"json/plain"`` is UTF-8 JSON. Codecs (compression,
    encryption) applied on the client rewrite both, so the server never needs to read ``data``.
    """

    encoding: str = JSON_ENCODING
    data: bytes = b"null"


class FailureKind(StrEnum):
    """What produced a failure."""

    APPLICATION = "application"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    TERMINATED = "terminated"
    ACTIVITY = "activity"
    CHILD_WORKFLOW = "child_workflow"
    SERVER = "server"


class TimeoutType(StrEnum):
    """Which timeout fired."""

    SCHEDULE_TO_START = "schedule_to_start"
    START_TO_CLOSE = "start_to_close"
    SCHEDULE_TO_CLOSE = "schedule_to_close"
    HEARTBEAT = "heartbeat"


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """An exception turned into data, with its cause chain.

    ``type`` is the exception class name for application errors; retry policies match
    ``non_retryable_error_types`` against it.
    """

    message: str
    type: str = ""
    kind: FailureKind = FailureKind.APPLICATION
    stack: str = ""
    non_retryable: bool = False
    details: tuple[Payload, ...] = ()
    cause: Failure | None = None
    timeout_type: TimeoutType | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How a failed activity (or workflow) is retried.

    Defaults are Temporal's: first retry after 1 s, each interval doubled, capped at 100 times the
    initial interval, unlimited attempts (``maximum_attempts=0``). ``non_retryable_error_types``
    lists exception class names that are never retried.
    """

    initial_interval: timedelta = timedelta(seconds=1)
    backoff_coefficient: float = 2.0
    maximum_interval: timedelta | None = None
    maximum_attempts: int = 0
    non_retryable_error_types: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.initial_interval <= timedelta(0):
            raise ValueError(
                f"RetryPolicy.initial_interval must be positive, got {self.initial_interval}"
            )
        if not self.backoff_coefficient >= 1:  # NaN too: it would fail the retry later
            raise ValueError(
                f"RetryPolicy.backoff_coefficient must be >= 1, got {self.backoff_coefficient}"
            )
        if self.maximum_interval is not None and self.maximum_interval < self.initial_interval:
            raise ValueError(
                "RetryPolicy.maximum_interval must be >= initial_interval, got "
                f"{self.maximum_interval} < {self.initial_interval}"
            )
        if self.maximum_attempts < 0:
            raise ValueError(
                "RetryPolicy.maximum_attempts must be >= 0 (0 = unlimited), "
                f"got {self.maximum_attempts}"
            )

    def effective_maximum_interval(self) -> timedelta:
        """The cap on the retry interval: ``maximum_interval`` or 100 times ``initial_interval``."""
        return self.maximum_interval or self.initial_interval * 100

    def backoff(self, attempt: int) -> timedelta:
        """The delay before attempt ``attempt + 1`` after attempt ``attempt`` (1-based) failed."""
        cap = self.effective_maximum_interval()
        try:
            factor = self.backoff_coefficient ** (attempt - 1)
        except OverflowError:  # unlimited attempts reach huge exponents; the cap holds there
            return cap
        if self.initial_interval.total_seconds() * factor >= cap.total_seconds():
            return cap
        return self.initial_interval * factor

    def allows_retry(self, attempt: int, failure: Failure) -> bool:
        """Whether a failure of attempt ``attempt`` (1-based) is retried under this policy."""
        if failure.non_retryable or failure.type in self.non_retryable_error_types:
            return False
        return self.maximum_attempts == 0 or attempt < self.maximum_attempts


@dataclass(frozen=True, slots=True, kw_only=True)
class CallSite:
    """Where in workflow code a command was issued (makes nondeterminism errors precise)."""

    file: str
    line: int
    function: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} in {self.function}"
