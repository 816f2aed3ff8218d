"""SDK I/O fixtures: a real server (in-process, real gRPC on loopback) on a fresh database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from chronicle.sdk.client import Client
from chronicle.server.app import Server
from tests.sdk_io.helpers import start_server


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[Server]:
    """A started server on a fresh database, on a free port; stopped afterwards."""
    instance = await start_server(database_url)
    try:
        yield instance
    finally:
        await instance.stop(grace=0)


@pytest.fixture
async def client(server: Server) -> AsyncIterator[Client]:
    """A client connected to ``server``."""
    connected = await Client.connect(f"127.0.0.1:{server.port}", retry_timeout=10.0)
    try:
        yield connected
    finally:
        await connected.close()
