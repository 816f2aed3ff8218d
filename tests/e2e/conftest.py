"""Fixtures for end-to-end tests: a real server subprocess on a fresh database, and a client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.e2e.processes import ServerProcess, free_port
from tests.e2e.tcp_proxy import TcpProxy


@contextlib.contextmanager
def _server_process(database_url: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(database_url, free_port()).start_listening()
    try:
        yield proc
    finally:
        proc.kill()


@contextlib.asynccontextmanager
async def _client_of(address: str) -> AsyncIterator[Any]:
    from chronicle import Client

    connected = await Client.connect(address)
    try:
        yield connected
    finally:
        await connected.close()


@pytest.fixture
def server(database_url: str) -> Iterator[ServerProcess]:
    """A running server subprocess on a fresh database."""
    with _server_process(database_url) as proc:
        yield proc


@pytest.fixture
def replica(database_url: str, server: ServerProcess) -> Iterator[ServerProcess]:
    """A second server subprocess on the ``server`` fixture's database (another replica)."""
    with _server_process(database_url) as proc:
        yield proc


@pytest.fixture
async def replica_client(replica: ServerProcess) -> AsyncIterator[Any]:
    """A Client connected to the ``replica`` fixture."""
    async with _client_of(replica.address) as connected:
        yield connected


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[Any]:
    """A Client connected to the ``server`` fixture."""
    async with _client_of(server.address) as connected:
        yield connected


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    """A TCP proxy (``tcp_proxy.py``), started with no useful target yet."""
    started = await TcpProxy(target=0).start()
    try:
        yield started
    finally:
        await started.close()
