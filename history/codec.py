"""The JSON form of events, commands and values: one mechanism for Postgres, the wire and export.

Attributes dataclasses are turned into JSON objects by pydantic ``TypeAdapter``s (built once per
class): ``bytes`` as base64, ``timedelta`` as float seconds, enums as their values. Decoding
validates, so a malformed command from a worker becomes an ``InvalidCommandError`` that names the
field.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pydantic

from chronicle.history import state, values
from chronicle.history.commands import COMMAND_CLASSES, COMMANDS_BY_TYPE, Command
from chronicle.history.errors import InvalidCommandError, InvalidHistoryError
from chronicle.history.events import (
    ATTRIBUTE_CLASSES,
    ATTRIBUTES_BY_TYPE,
    Event,
    EventAttributes,
    ParentRef,
)

_CONFIG = pydantic.ConfigDict(
    ser_json_bytes="base64", val_json_bytes="base64", ser_json_timedelta="float"
)

# Stdlib dataclasses take their pydantic config from a class attribute; set it once for every
# class that can appear in a history so nested values encode the same way at any depth.
for _cls in (
    *ATTRIBUTE_CLASSES,
    *COMMAND_CLASSES,
    ParentRef,
    values.Payload,
    values.Failure,
    values.RetryPolicy,
    values.CallSite,
    state.WorkflowState,
    state.WorkflowTaskState,
    state.PendingActivity,
    state.PendingTimer,
    state.PendingChild,
    state.PendingExternal,
):
    setattr(_cls, "__pydantic_config__", _CONFIG)  # noqa: B010 -- one loop configures every class


_ADAPTERS: dict[object, pydantic.TypeAdapter[Any]] = {}


def adapter(cls: object) -> pydantic.TypeAdapter[Any]:
    """The (cached) JSON adapter of a values/events/commands dataclass."""
    found = _ADAPTERS.get(cls)
    if found is None:
        found = _ADAPTERS[cls] = pydantic.TypeAdapter(cls)  # type: ignore[arg-type]
    return found


def to_json(value: Any) -> bytes:
    """Encode a history dataclass (attributes, command or value) as compact JSON."""
    return adapter(type(value)).dump_json(value)


def to_jsonable(value: Any) -> Any:
    """A history dataclass as plain JSON-compatible Python (dicts, lists, str, float …)."""
    return adapter(type(value)).dump_python(value, mode="json")


def _field_path(error: pydantic.ValidationError) -> str:
    first = error.errors()[0]
    return ".".join(str(part) for part in first["loc"])


def _error_text(error: pydantic.ValidationError) -> str:
    first = error.errors()[0]
    path = _field_path(error)
    return f"{path}: {first['msg']}" if path else str(first["msg"])


def decode_attributes(event_type: str, data: bytes | str | dict[str, Any]) -> EventAttributes:
    """Decode an event's attributes from JSON (bytes/str) or an already-parsed dict."""
    cls = ATTRIBUTES_BY_TYPE.get(event_type)
    if cls is None:
        raise InvalidHistoryError(f"unknown event type {event_type!r}")
    try:
        if isinstance(data, dict):
            return adapter(cls).validate_python(data)  # type: ignore[no-any-return]
        return adapter(cls).validate_json(data)  # type: ignore[no-any-return]
    except pydantic.ValidationError as exc:
        raise InvalidHistoryError(f"{event_type} attributes: {_error_text(exc)}") from exc


def decode_command(command_type: str, data: bytes | str | dict[str, Any]) -> Command:
    """Decode a command from JSON; ``InvalidCommandError`` names the bad field."""
    cls = COMMANDS_BY_TYPE.get(command_type)
    if cls is None:
        known = ", ".join(sorted(COMMANDS_BY_TYPE))
        raise InvalidCommandError(
            f"unknown command type {command_type!r} (known: {known})", field="command_type"
        )
    try:
        if isinstance(data, dict):
            return adapter(cls).validate_python(data)  # type: ignore[no-any-return]
        return adapter(cls).validate_json(data)  # type: ignore[no-any-return]
    except (pydantic.ValidationError, ValueError) as exc:
        if isinstance(exc, pydantic.ValidationError):
            raise InvalidCommandError(
                f"{command_type}: {_error_text(exc)}", field=_field_path(exc)
            ) from exc
        raise InvalidCommandError(f"{command_type}: {exc}") from exc


def state_to_json(workflow_state: state.WorkflowState) -> bytes:
    """A run's folded state as JSON (the server's snapshot column)."""
    return adapter(state.WorkflowState).dump_json(workflow_state)


def state_from_json(data: bytes | str) -> state.WorkflowState:
    """Read back ``state_to_json``."""
    return adapter(state.WorkflowState).validate_json(data)  # type: ignore[no-any-return]


def event_to_dict(event: Event) -> dict[str, Any]:
    """An event in the documented export form (docs/history-format.md)."""
    return {
        "id": event.id,
        "time": event.time.astimezone(UTC).isoformat(),
        "type": event.type,
        "attributes": to_jsonable(event.attributes),
    }


def event_from_dict(data: dict[str, Any]) -> Event:
    """Read back an event written by ``event_to_dict``; ``InvalidHistoryError`` if malformed."""
    try:
        event_id = int(data["id"])
        time = datetime.fromisoformat(str(data["time"]))
        event_type = str(data["type"])
        attributes = data.get("attributes", {})
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidHistoryError(f"malformed event {data!r:.200}: {exc}") from exc
    if time.tzinfo is None:
        raise InvalidHistoryError(f"event {event_id}: time {data['time']!r} has no UTC offset")
    if not isinstance(attributes, dict):
        raise InvalidHistoryError(f"event {event_id}: attributes must be an object")
    return Event(id=event_id, time=time, attributes=decode_attributes(event_type, attributes))
