"""Request checks shared by every RPC: payload sizes and identifier lengths (naming the
field), and required ids."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Final

from google.protobuf.message import Message

from chronicle.history.values import Payload
from chronicle.server import errors
from chronicle.server.engine import limits

_PAYLOAD = "chronicle.v1.Payload"
_IDENTIFIERS: Final = frozenset(
    {
        "workflow_id",
        "run_id",
        "first_run_id",
        "first_execution_run_id",
        "reset_to_run_id",
        "reset_from_run_id",
        "parent_workflow_id",
        "parent_run_id",
        "next_run_id",
        "task_queue",
        "workflow_type",
        "activity_id",
        "activity_type",
        "signal_name",
        "query_name",
        "update_name",
        "update_id",
        "request_id",
        "poll_request_ids",
        "query_id",
        "identity",
        "last_worker_identity",
        "inline_started_activity_ids",
        "eager_activity_types",
    }
)
"""The string fields of requests that name something (``limits.MAX_ID_BYTES``)."""


def _too_big(path: str, size: int, limit: int) -> errors.InvalidArgument:
    return errors.InvalidArgument(
        f"{path} is {size} bytes, over the {limit}-byte payload limit", field=path
    )


def check_message(message: Message, limit: int) -> None:
    """Reject any Payload inside ``message`` larger than ``limit`` bytes.

    A message no larger than ``limit`` encoded cannot hold a larger payload: it is not walked
    (most requests; the walk costs tens of microseconds on every workflow-task completion).
    """
    if message.ByteSize() > limit:
        _check_fields(message, limit, "")


def _check_fields(message: Message, limit: int, prefix: str) -> None:
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        path = prefix + field.name
        if field.is_repeated:
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                if value_field.message_type is None:
                    continue
                for key, item in value.items():
                    _check_one(item, value_field.message_type.full_name, f"{path}[{key!r}]", limit)
            else:
                for index, item in enumerate(value):
                    _check_one(item, field.message_type.full_name, f"{path}[{index}]", limit)
        else:
            _check_one(value, field.message_type.full_name, path, limit)


def _check_one(message: Message, type_name: str, path: str, limit: int) -> None:
    if type_name == _PAYLOAD:
        size = len(message.data)  # type: ignore[attr-defined]
        if size > limit:
            raise _too_big(path, size, limit)
    else:
        _check_fields(message, limit, path + ".")


def check_values(values: Sequence[Any], limit: int, prefix: str, *, encoded_size: int) -> None:
    """Reject any ``Payload`` inside decoded dataclasses (e.g. commands) over ``limit`` bytes.

    ``encoded_size``: the size of the message they were decoded from. A payload is never larger
    than its encoding (raw bytes, or base64 inside JSON), so when the message is within
    ``limit`` nothing is walked.
    """
    if encoded_size <= limit:
        return
    for index, value in enumerate(values):
        _walk(value, f"{prefix}[{index}]", limit)


def _walk(value: Any, path: str, limit: int) -> None:
    if isinstance(value, Payload):
        if len(value.data) > limit:
            raise _too_big(path, len(value.data), limit)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            _walk(getattr(value, field.name), f"{path}.{field.name}", limit)
    elif isinstance(value, tuple | list):
        for index, item in enumerate(value):
            _walk(item, f"{path}[{index}]", limit)
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk(item, f"{path}[{key!r}]", limit)


def check_identifiers(message: Message) -> None:
    """Reject a namespace or identifier in ``message`` longer than its limit
    (``engine/limits.py``). A message no larger than ``MAX_ID_BYTES`` encoded cannot hold
    a longer identifier: only its namespace is looked at."""
    namespace = getattr(message, "namespace", "")
    if namespace:
        limits.check_identifier(namespace, "namespace", limits.MAX_NAMESPACE_BYTES)
    if message.ByteSize() > limits.MAX_ID_BYTES:
        _check_identifier_fields(message, "")


def _check_identifier_fields(message: Message, prefix: str) -> None:
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                continue  # memo and search attributes: names of the user's choice
            children = value if field.is_repeated else [value]
            for index, child in enumerate(children):
                where = f"{path}[{index}]." if field.is_repeated else f"{path}."
                _check_identifier_fields(child, where)
        elif field.name in _IDENTIFIERS and field.type == field.TYPE_STRING:
            for index, item in enumerate(value if field.is_repeated else [value]):
                limits.check_identifier(item, f"{path}[{index}]" if field.is_repeated else path)


def require(request: Any, *names: str) -> None:
    """Reject a request whose string field ``name`` is empty."""
    for name in names:
        if not getattr(request, name):
            raise errors.InvalidArgument(f"{name} is required", field=name)


def namespace(request: Any) -> str:
    """The request's namespace; empty means ``"default"``."""
    return str(request.namespace) or "default"
