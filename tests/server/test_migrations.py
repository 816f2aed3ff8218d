"""Migrations are idempotent, safe to run concurrently, and match schema.sql."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from chronicle.server.store.migrate import SCHEMA_FILE, migrations, run_migrations
from chronicle.server.store.pool import create_pool

_CATALOG = {
    "columns": """
        SELECT table_name, column_name, ordinal_position, data_type, is_nullable,
               column_default
        FROM information_schema.columns WHERE table_schema = 'public'
        ORDER BY table_name, column_name""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
        ORDER BY tablename, indexname""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace
        ORDER BY 1, 2""",
    "storage": """
        SELECT relname, reloptions FROM pg_class
        WHERE relnamespace = 'public'::regnamespace AND reloptions IS NOT NULL
        ORDER BY relname""",
}


async def _catalog(url: str) -> dict[str, list[tuple[object, ...]]]:
    conn = await asyncpg.connect(url)
    try:
        return {
            name: [tuple(row) for row in await conn.fetch(query)]
            for name, query in _CATALOG.items()
        }
    finally:
        await conn.close()


@pytest.fixture
async def second_database(postgres_url: str) -> AsyncIterator[str]:
    """Another fresh database beside ``database_url``."""
    name = f"chronicle_schema_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    base, _, query = postgres_url.partition("?")
    yield f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def test_migrations_are_idempotent_and_concurrent(database_url: str) -> None:
    pools = [await create_pool(database_url, min_size=1, max_size=2) for _ in range(2)]
    try:
        results = await asyncio.gather(*(run_migrations(pool) for pool in pools))
        versions = [m.version for m in migrations()]
        assert sorted(results[0] + results[1]) == versions  # each applied exactly once
        assert await run_migrations(pools[0]) == []
        rows = await pools[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == versions
    finally:
        for pool in pools:
            await pool.close()


async def test_schema_sql_matches_migrations(database_url: str, second_database: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        await run_migrations(pool)
    finally:
        await pool.close()
    conn = await asyncpg.connect(second_database)
    try:
        await conn.execute(SCHEMA_FILE.read_text())
    finally:
        await conn.close()
    migrated, reference = await _catalog(database_url), await _catalog(second_database)
    for name in _CATALOG:
        assert migrated[name] == reference[name], name
