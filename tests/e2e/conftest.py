"""Fixtures for end-to-end tests: a real server subprocess on a fresh database, and a client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.e2e.processes import ServerProcess, free_port


@pytest.fixture
def server(database_url: str) -> Iterator[ServerProcess]:
    """A running server subprocess on a fresh database."""
    proc = ServerProcess(database_url, free_port()).start_listening()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def replica(database_url: str, server: ServerProcess) -> Iterator[ServerProcess]:
    """A second server subprocess on the ``server`` fixture's database (another replica)."""
    proc = ServerProcess(database_url, free_port()).start_listening()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
async def replica_client(replica: ServerProcess) -> AsyncIterator[Any]:
    """A Client connected to the ``replica`` fixture."""
    from chronicle import Client

    connected = await Client.connect(replica.address)
    try:
        yield connected
    finally:
        await connected.close()


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[Any]:
    """A Client connected to the ``server`` fixture."""
    from chronicle import Client

    connected = await Client.connect(server.address)
    try:
        yield connected
    finally:
        await connected.close()
