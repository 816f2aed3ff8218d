"""User values ⇄ ``Payload``: JSON via pydantic, rebuilt from type hints on the way back.

Encoding needs no hint: pydantic serialises JSON values, dataclasses, pydantic models, datetimes,
UUIDs, enums, tuples and sets by their runtime type. Decoding takes the *expected* type (a
parameter or return annotation) and validates the JSON into it, so a dataclass argument comes
back as that dataclass. Without a hint (``Any``) decoding gives plain JSON values.

Pure: stdlib and pydantic only. Adapters are built once per hint and cached.
"""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Sequence
from typing import Any, cast

import pydantic
import pydantic_core

from chronicle.history.values import JSON_ENCODING, Payload

__all__ = [
    "PayloadEncodingError",
    "from_payload",
    "from_payloads",
    "to_payload",
    "to_payloads",
]


class PayloadEncodingError(ValueError):
    """A value that cannot be encoded, or a payload that cannot be decoded into the wanted type.

    The message names the value's type or the target type and says why; callers prefix where the
    value came from (``"argument 2 of charge_card: ..."``).
    """


_ANY_ADAPTER: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(Any)
_adapters: dict[object, pydantic.TypeAdapter[Any]] = {}
_adapters_lock = threading.Lock()


def _adapter(hint: object) -> pydantic.TypeAdapter[Any]:
    """The cached ``TypeAdapter`` of ``hint`` (uncached if the hint is unhashable)."""
    if _is_any(hint):
        return _ANY_ADAPTER
    try:
        cached = _adapters.get(hint)
    except TypeError:  # an unhashable hint: build it each time
        return pydantic.TypeAdapter(cast(Any, hint))
    if cached is not None:
        return cached
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(cast(Any, hint))
    with _adapters_lock:
        _adapters.setdefault(hint, adapter)
    return adapter


def _is_any(hint: object) -> bool:
    return hint is Any or hint is inspect.Parameter.empty or hint is object


def _type_name(hint: object) -> str:
    return getattr(hint, "__qualname__", None) or repr(hint)


def to_payload(value: object) -> Payload:
    """Encode one value as a ``json/plain`` payload; ``PayloadEncodingError`` if it cannot be."""
    try:
        data = _ANY_ADAPTER.dump_json(value)
    except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
        raise PayloadEncodingError(
            f"cannot encode a value of type {type(value).__qualname__} as JSON: {exc}"
        ) from exc
    return Payload(encoding=JSON_ENCODING, data=data)


def to_payloads(values: Sequence[object]) -> tuple[Payload, ...]:
    """Encode each value; the error names the position (``value 2 of 3: ...``)."""
    out: list[Payload] = []
    for index, value in enumerate(values, start=1):
        try:
            out.append(to_payload(value))
        except PayloadEncodingError as exc:
            raise PayloadEncodingError(f"value {index} of {len(values)}: {exc}") from exc
    return tuple(out)


def from_payload(payload: Payload, hint: object = Any) -> Any:
    """Decode a payload into ``hint`` (a type or annotation); ``Any`` gives plain JSON values."""
    if payload.encoding != JSON_ENCODING:
        raise PayloadEncodingError(
            f"cannot decode a payload with encoding {payload.encoding!r} "
            f"(only {JSON_ENCODING!r} is supported here; is a codec missing?)"
        )
    if _is_any(hint):
        try:
            return json.loads(payload.data)
        except ValueError as exc:
            raise PayloadEncodingError(f"payload is not valid JSON: {exc}") from exc
    try:
        return _adapter(hint).validate_json(payload.data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise PayloadEncodingError(
            f"cannot decode {payload.data[:80]!r} as {_type_name(hint)}: "
            f"{where + ': ' if where else ''}{first['msg']}"
        ) from exc
    except pydantic.PydanticUserError as exc:
        raise PayloadEncodingError(f"cannot decode into {_type_name(hint)}: {exc}") from exc


def from_payloads(payloads: Sequence[Payload], hints: Sequence[object]) -> list[Any]:
    """Decode each payload with the hint at its position (``Any`` past the end of ``hints``)."""
    out: list[Any] = []
    for index, payload in enumerate(payloads):
        hint = hints[index] if index < len(hints) else Any
        try:
            out.append(from_payload(payload, hint))
        except PayloadEncodingError as exc:
            raise PayloadEncodingError(f"value {index + 1} of {len(payloads)}: {exc}") from exc
    return out
