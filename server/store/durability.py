"""The database settings the server's durability promise relies on, checked at start.

The promise: a call answers only after everything it wrote is flushed to Postgres's WAL, so an
acknowledged event survives a crash of Postgres or of its machine (docs/decisions.md 18).

- ``synchronous_commit`` must be ``on`` for the server's own connections. The pool sets it as a
  startup parameter (``pool.SESSION_SETTINGS``), which outranks what the database, the role or
  the URL's ``options`` say; ``check`` refuses to start when it did not take (a connection
  pooler in between may drop startup parameters).
- ``fsync`` and ``full_page_writes`` belong to the whole Postgres server and cannot be set per
  connection. When they are off, a Postgres *process* crash still loses nothing, but a machine
  crash or power loss can lose acknowledged events or corrupt the data: ``check`` reports it,
  and the server logs a warning and runs (a throw-away development database may want them off).
"""

from __future__ import annotations

from typing import Final

from chronicle.server.store.pool import Conn

REQUIRED: Final = {"synchronous_commit": "on"}
"""Settings the server refuses to run without (on its own connections)."""

WARNED: Final = {"fsync": "on", "full_page_writes": "on"}
"""Server-wide settings whose other values weaken durability against a machine crash."""


class UnsafeDatabaseSettings(Exception):
    """The server's connections do not run with a setting its durability relies on."""


async def check(conn: Conn) -> list[str]:
    """Check the settings ``conn`` (a pooled connection) runs with.

    Raises ``UnsafeDatabaseSettings`` naming each ``REQUIRED`` setting that is off, with its
    source. Returns a warning for each ``WARNED`` setting that is off.
    """
    names = [*REQUIRED, *WARNED]
    rows = await conn.fetch(
        "SELECT name, setting, source FROM pg_settings WHERE name = ANY($1::text[])", names
    )
    found = {row["name"]: (row["setting"], row["source"]) for row in rows}
    wrong = [
        f"{name} is {found[name][0]!r} (set by: {found[name][1]}), not {wanted!r}"
        for name, wanted in REQUIRED.items()
        if name in found and found[name][0] != wanted
    ]
    if wrong:
        raise UnsafeDatabaseSettings(
            "the server's database connections would acknowledge commits before they are "
            f"durable: {'; '.join(wrong)}. The server asks for synchronous_commit=on when it "
            "connects; a connection pooler between it and Postgres must pass that on (or "
            "connect the server to Postgres directly)."
        )
    return [
        f"{name} is {found[name][0]!r} (set by: {found[name][1]}): a machine crash or power "
        "loss can lose events the server acknowledged"
        for name, wanted in WARNED.items()
        if name in found and found[name][0] != wanted
    ]
