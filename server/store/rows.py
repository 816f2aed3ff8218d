"""Typed views of stored rows that are not history: run keys and ``activities`` rows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chronicle.history import codec
from chronicle.history import events as ev
from chronicle.history.values import Failure, Payload


@dataclass(frozen=True, slots=True)
class RunKey:
    """The key of one run: every per-workflow row carries it."""

    namespace: str
    workflow_id: str
    run_id: str

    def params(self) -> tuple[str, str, str]:
        """The key as the ``$1, $2, $3`` parameters of every per-run statement."""
        return (self.namespace, self.workflow_id, self.run_id)


def payloads_to_json(payloads: tuple[Payload, ...]) -> str:
    """Payloads as a JSON array (a jsonb column value)."""
    return codec.adapter(tuple[Payload, ...]).dump_json(payloads).decode()


def payloads_from_json(text: str | None) -> tuple[Payload, ...]:
    """Read back ``payloads_to_json``; NULL reads as no payloads."""
    if not text:
        return ()
    return codec.adapter(tuple[Payload, ...]).validate_json(text)  # type: ignore[no-any-return]


def payload_to_json(payload: Payload | None) -> str | None:
    """One payload as a jsonb column value (NULL for None)."""
    return None if payload is None else codec.to_json(payload).decode()


def payload_from_json(text: str | None) -> Payload | None:
    """Read back ``payload_to_json``."""
    if not text:
        return None
    return codec.adapter(Payload).validate_json(text)  # type: ignore[no-any-return]


def failure_to_json(failure: Failure | None) -> str | None:
    """A failure as a jsonb column value (NULL for None)."""
    return None if failure is None else codec.to_json(failure).decode()


def failure_from_json(text: str | None) -> Failure | None:
    """Read back ``failure_to_json``."""
    if not text:
        return None
    return codec.adapter(Failure).validate_json(text)  # type: ignore[no-any-return]


def memo_to_json(memo: dict[str, Payload]) -> str:
    """A memo map as a jsonb column value."""
    return json.dumps({k: codec.to_jsonable(v) for k, v in memo.items()})


def memo_from_json(text: str | None) -> dict[str, Payload]:
    """Read back ``memo_to_json``."""
    if not text:
        return {}
    return codec.adapter(dict[str, Payload]).validate_json(text)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityInfo:
    """One ``activities`` row: the per-attempt state of a pending activity (not in history)."""

    scheduled_event_id: int
    state: str
    attempt: int
    scheduled_time: datetime
    attempt_scheduled_time: datetime
    started_time: datetime | None
    last_heartbeat_time: datetime | None
    heartbeat_details: tuple[Payload, ...]
    last_failure: Failure | None
    last_worker_identity: str
    attributes: ev.ActivityScheduled

    @classmethod
    def from_record(cls, row: Any, prefix: str = "") -> ActivityInfo:
        """Decode a row selected by ``LOCK_ACTIVITIES`` / ``LIST_ACTIVITIES`` (or, with
        ``prefix="a_"``, by ``LOCK_EXECUTION_AND_ACTIVITIES``)."""
        attributes = codec.decode_attributes("ActivityScheduled", row[prefix + "attributes"])
        assert isinstance(attributes, ev.ActivityScheduled)
        return cls(
            scheduled_event_id=row[prefix + "scheduled_event_id"],
            state=row[prefix + "state"],
            attempt=row[prefix + "attempt"],
            scheduled_time=row[prefix + "scheduled_time"],
            attempt_scheduled_time=row[prefix + "attempt_scheduled_time"],
            started_time=row[prefix + "started_time"],
            last_heartbeat_time=row[prefix + "last_heartbeat_time"],
            heartbeat_details=payloads_from_json(row[prefix + "heartbeat_details"]),
            last_failure=failure_from_json(row[prefix + "last_failure"]),
            last_worker_identity=row[prefix + "last_worker_identity"],
            attributes=attributes,
        )

    def update_params(self, key: RunKey) -> tuple[Any, ...]:
        """The parameters of ``UPDATE_ACTIVITY`` writing this row's mutable columns."""
        return (
            *key.params(),
            self.scheduled_event_id,
            self.state,
            self.attempt,
            self.attempt_scheduled_time,
            self.started_time,
            self.last_heartbeat_time,
            payloads_to_json(self.heartbeat_details) if self.heartbeat_details else None,
            failure_to_json(self.last_failure),
            self.last_worker_identity,
        )


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A history row as stored: the attributes stay JSON text (sent to workers as they are)."""

    event_id: int
    event_type: str
    event_time: datetime
    attributes: str

    @classmethod
    def from_record(cls, row: Any) -> StoredEvent:
        """Decode a row selected by ``GET_EVENTS`` / ``GET_EVENT``."""
        return cls(row["event_id"], row["event_type"], row["event_time"], row["attributes"])

    def decode(self) -> ev.Event:
        """The event as a history dataclass."""
        return ev.Event(
            id=self.event_id,
            time=self.event_time,
            attributes=codec.decode_attributes(self.event_type, self.attributes),
        )
