"""Numbered migrations (``migrations/NNNN_name.sql``) applied at start, idempotently.

Safe to run concurrently from several processes: the whole run holds a session advisory lock,
and each migration is applied in its own transaction together with its ``schema_migrations`` row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from chronicle.server.store import sql
from chronicle.server.store.pool import Pool

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
"""Where the numbered migration files live."""

SCHEMA_FILE = Path(__file__).parent / "schema.sql"
"""The reference schema: what applying every migration produces (checked by a test)."""

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered migration file."""

    version: int
    name: str
    text: str


def migrations() -> list[Migration]:
    """Every migration, in version order."""
    found: list[Migration] = []
    for path in sorted(MIGRATIONS_DIR.iterdir()):
        match = _NAME.match(path.name)
        if match:
            found.append(Migration(int(match[1]), match[2], path.read_text()))
    return found


async def run_migrations(pool: Pool) -> list[int]:
    """Apply every migration not applied yet; returns the versions applied by this call."""
    applied: list[int] = []
    async with pool.acquire() as conn:
        await conn.execute(sql.ADVISORY_LOCK, sql.MIGRATION_LOCK_KEY)
        try:
            await conn.execute(sql.CREATE_SCHEMA_MIGRATIONS)
            done = {row["version"] for row in await conn.fetch(sql.APPLIED_MIGRATIONS)}
            for migration in migrations():
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.text)
                    await conn.execute(sql.RECORD_MIGRATION, migration.version, migration.name)
                applied.append(migration.version)
        finally:
            await conn.execute(sql.ADVISORY_UNLOCK, sql.MIGRATION_LOCK_KEY)
    return applied
