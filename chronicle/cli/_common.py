"""Helpers shared by the CLI commands: the client connection, JSON inputs, errors."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from chronicle.sdk.client import Client

__all__ = ["CommandError", "connect", "parse_inputs", "seconds"]

CLI_CONNECT_TIMEOUT = 5.0
"""Seconds the CLI waits for the server before saying it cannot reach it."""

CLI_RETRY_TIMEOUT = 15.0
"""Seconds a CLI call keeps retrying while the server is unavailable."""


class CommandError(Exception):
    """A failure the CLI reports as one line, with its own exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@asynccontextmanager
async def connect(
    args: argparse.Namespace,
    *,
    retry_timeout: float = CLI_RETRY_TIMEOUT,
    connect_timeout: float = CLI_CONNECT_TIMEOUT,
) -> AsyncIterator[Client]:
    """A client for ``--address``/``--namespace``, closed on exit."""
    client = await Client.connect(
        args.address,
        namespace=args.namespace,
        connect_timeout=connect_timeout,
        retry_timeout=retry_timeout,
    )
    try:
        yield client
    finally:
        await client.close()


def parse_inputs(values: list[str] | None, option: str = "--input") -> list[Any]:
    """Each ``--input`` as a JSON value; ``CommandError`` names the one that is not JSON."""
    parsed: list[Any] = []
    for index, text in enumerate(values or [], start=1):
        try:
            parsed.append(json.loads(text))
        except json.JSONDecodeError as exc:
            raise CommandError(
                f"{option} #{index} is not valid JSON ({exc.msg}): {text!r}; "
                "strings need quotes, e.g. --input '\"o-1\"'",
                exit_code=2,
            ) from None
    return parsed


def to_json(value: Any, *, indent: int | None = None) -> str:
    """``value`` as JSON text (non-JSON values via ``str``)."""
    return json.dumps(value, indent=indent, default=str, ensure_ascii=False)


def seconds(text: str) -> float:
    """An argparse type: a number of seconds, finite, >= 0 and short enough for a
    ``timedelta`` (the server then applies its own limits)."""
    try:
        value = float(text)
        timedelta(seconds=value)
    except (ValueError, OverflowError):
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value
