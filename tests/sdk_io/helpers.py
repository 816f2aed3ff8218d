"""Helpers for the SDK I/O tests: free ports, real servers, waiting on conditions, history."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from chronicle.history.events import Event
from chronicle.server.app import Server
from chronicle.server.config import ServerConfig

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_config(database_url: str, port: int = 0) -> ServerConfig:
    """Test settings: short long polls and sticky timeout, so tests never wait on them."""
    return ServerConfig(
        database_url=database_url,
        port=port,
        poll_timeout=5.0,
        sticky_timeout=timedelta(seconds=1),
    )


async def start_server(database_url: str, port: int = 0, timeout: float = 10.0) -> Server:
    """A started real server on ``database_url`` (retrying the bind while the port frees up)."""
    deadline = time.monotonic() + timeout
    while True:
        server = Server(server_config(database_url, port))
        try:
            await server.start()
            return server
        except OSError:
            if port == 0 or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def eventually(
    check: Callable[[], Awaitable[T | None]], timeout: float = 15.0, interval: float = 0.05
) -> T:
    """Poll ``check`` until it returns something other than None (or fail after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


def of_type(events: Sequence[Event], name: str) -> list[Any]:
    """The attributes of the events of type ``name``."""
    return [e.attributes for e in events if e.type == name]
