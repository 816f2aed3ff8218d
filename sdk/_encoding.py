"""Encoding the Python arguments of a client call into the payloads of its request."""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from typing import Any

from chronicle.history import wire
from chronicle.history.payloads import PayloadEncodingError, to_payload
from chronicle.protos.v1 import common_pb2

__all__ = ["encode_args"]


def encode_args(args: Iterable[Any], what: str) -> list[common_pb2.Payload]:
    """Encode call arguments; ``PayloadEncodingError`` names the argument index and ``what``."""
    encoded: builtins.list[common_pb2.Payload] = []
    for index, arg in enumerate(args):
        try:
            encoded.append(wire.payload_to_proto(to_payload(arg)))
        except (PayloadEncodingError, TypeError, ValueError) as exc:
            raise PayloadEncodingError(
                f"cannot encode argument {index} of {what} ({type(arg).__name__}): {exc}"
            ) from exc
    return encoded
