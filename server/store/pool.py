"""The asyncpg pool, the one transaction helper (with retry of deadlocks/serialization), and
what counts as the database being unavailable."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
"""A connection, bare or borrowed from the pool."""

Pool: TypeAlias = "asyncpg.Pool[Any]"
"""The server's connection pool."""

T = TypeVar("T")

RETRYABLE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
)
"""Errors after which a transaction is simply run again."""

UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable; TimeoutError (connecting) is one too
    asyncpg.exceptions.PostgresConnectionError,  # class 08: the connection broke
    asyncpg.exceptions.CannotConnectNowError,  # 57P03: starting up, recovering, shutting down
    asyncpg.exceptions.AdminShutdownError,  # 57P01: fast shutdown, pg_terminate_backend
    asyncpg.exceptions.CrashShutdownError,  # 57P02: another backend crashed
    asyncpg.exceptions.TooManyConnectionsError,  # 53300: every slot taken, for now
)
"""Errors meaning Postgres could not be reached or dropped the connection: nothing about the
request was wrong, and the same request may succeed later. A statement cut off this way may
or may not have committed."""

_CLOSED = "connection is closed"
"""asyncpg's ``InterfaceError`` text for a connection that broke (e.g. a transaction's exit
after its connection was lost hides the error that lost it)."""


def unavailable_cause(exc: BaseException) -> BaseException | None:
    """The error, among ``exc`` and the errors it was raised from or during, that says the
    database is unavailable (``UNAVAILABLE``, or asyncpg finding its connection closed); None
    when the database is not to blame."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, asyncpg.exceptions.ProtocolViolationError):
            return None  # a bug on one side, not an outage
        if isinstance(current, UNAVAILABLE):
            return current
        if isinstance(current, asyncpg.exceptions.InterfaceError) and _CLOSED in str(current):
            return current.__cause__ or current.__context__ or current
        current = current.__cause__ or current.__context__
    return None


class _PooledConnection(asyncpg.Connection):
    """A pooled connection released without asyncpg's reset query.

    asyncpg resets a connection on release with a round trip (``CLOSE ALL; UNLISTEN *; RESET
    ALL; pg_advisory_unlock_all()``), one more per transaction. The server never leaves session
    state on a pooled connection: no cursors, ``LISTEN`` (the notifier has its own connection)
    or ``SET``, and the migration lock is released in a ``finally``. asyncpg still rolls back an
    open transaction on release.
    """

    def get_reset_query(self) -> str:
        """No reset round trip (see the class docstring)."""
        return ""


SESSION_SETTINGS: Final = {
    "application_name": "chronicle-server",
    # Every commit waits for its WAL flush before it returns: an event a call acknowledged
    # must survive a crash. A startup parameter outranks the database's, the role's and the
    # URL's ``options`` (docs/decisions.md 18; ``durability.check`` verifies it at start).
    "synchronous_commit": "on",
}
"""The session settings of every pooled connection (startup parameters)."""


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 20) -> Pool:
    """Open a pool to ``url`` (``SESSION_SETTINGS`` on every connection); raises
    ``OSError``/``asyncpg`` errors when unreachable."""
    settings = dict(SESSION_SETTINGS)
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=10,
        server_settings=settings,
        connection_class=_PooledConnection,
    )
    assert pool is not None
    return pool


async def in_transaction(
    pool: Pool,
    body: Callable[[Conn], Awaitable[T]],
    *,
    retry_on: tuple[type[BaseException], ...] = (),
    attempts: int = 6,
) -> T:
    """Run ``body(conn)`` in one transaction; rerun it on deadlock/serialization failures.

    ``body`` must be safe to rerun: everything it wrote was rolled back with the failed attempt.
    """
    retryable = RETRYABLE + retry_on
    for attempt in range(attempts):
        try:
            async with pool.acquire() as conn, conn.transaction():
                return await body(conn)
        except retryable:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.002 * 2**attempt)
    raise AssertionError("unreachable")
