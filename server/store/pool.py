"""The asyncpg pool, the one transaction helper (with retry of deadlocks/serialization), and
what counts as the database being unavailable."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from chronicle.server import telemetry

Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
"""A connection, bare or borrowed from the pool."""

Pool: TypeAlias = "asyncpg.Pool[Any]"
"""The server's connection pool."""

T = TypeVar("T")


class StaleRead(Exception):
    """A transaction read something without a lock that changed before it could lock it in
    the required lock order (docs/decisions.md §15); ``in_transaction`` reruns it.

    ``moved_to`` names what it changed to (e.g. the workflow id's new current run), committed
    by another transaction: a rerun after a ``StaleRead`` whose ``moved_to`` this call has not
    seen before is progress and does not count as one of the call's attempts. Empty: every
    rerun counts."""

    def __init__(self, message: str, *, moved_to: str = "") -> None:
        super().__init__(message)
        self.moved_to = moved_to


RETRYABLE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    StaleRead,
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


_FREE_HOLDER: Final = "called on a free connection holder"
"""asyncpg's ``InternalClientError`` text for a release whose connection was already given
back to the pool (``_Pool.release``)."""


class _Pool(asyncpg.Pool):
    """asyncpg's pool, with a release that tolerates a connection lost as it is released.

    asyncpg's release runs in a task of its own (shielded from cancellation), so it starts one
    loop turn after ``async with pool.acquire()`` ends. When Postgres drops the connection in
    that turn (a crash, a restart, ``pg_terminate_backend``), the connection's close gives its
    holder back to the pool first, and the release then raises ``InternalClientError``. That
    error replaced the block's own (a lost connection, which a call maps to UNAVAILABLE) with
    one mapped to INTERNAL, and failed blocks that had succeeded, commits included. The
    holder is back in the pool either way: nothing is left to release.
    """

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:
        """Give ``connection`` back (see the class docstring for the one error ignored)."""
        try:
            await super().release(connection, timeout=timeout)
        except asyncpg.exceptions.InternalClientError as exc:
            if _FREE_HOLDER not in str(exc):
                raise


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 20) -> Pool:
    """Open a pool to ``url`` (``SESSION_SETTINGS`` on every connection); raises
    ``OSError``/``asyncpg`` errors when unreachable."""
    # asyncpg.create_pool's own defaults, with this module's pool and connection classes.
    pool = _Pool(
        url,
        min_size=min_size,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        setup=None,
        init=None,
        reset=None,
        loop=None,
        connection_class=_PooledConnection,
        record_class=asyncpg.Record,
        timeout=10,
        server_settings=dict(SESSION_SETTINGS),
    )
    await pool
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
    A ``StaleRead`` that names a change this call has not seen before (``moved_to``) reruns it
    at once without using up an attempt: another transaction committed that change, so the
    reruns end when the others do (a queue of starts replacing one id's run, each moving its
    current row on, all succeed in turn). A repeated or unnamed one counts like a deadlock.
    """
    retryable = RETRYABLE + retry_on
    attempt = 0
    moves: set[str] = set()
    while True:
        try:
            async with pool.acquire() as conn, conn.transaction():
                return await body(conn)
        except retryable as exc:
            if isinstance(exc, StaleRead) and exc.moved_to and exc.moved_to not in moves:
                moves.add(exc.moved_to)
                _log_rerun(exc, attempt + 1)
                continue  # the change is committed: nothing to wait for
            if attempt == attempts - 1:
                raise
            _log_rerun(exc, attempt + 1)
            await asyncio.sleep(0.002 * 2**attempt)
            attempt += 1


def _log_rerun(exc: BaseException, attempt: int) -> None:
    """Say why a transaction runs again: a deadlock here means two transactions took the same
    locks in opposite orders (docs/decisions.md §15 keeps them from doing so)."""
    sqlstate = getattr(exc, "sqlstate", None)
    log = telemetry.logger(component="store")
    fields = {"error": type(exc).__name__, "sqlstate": sqlstate, "attempt": attempt}
    if isinstance(exc, asyncpg.exceptions.DeadlockDetectedError):
        log.warning("transaction rolled back by a deadlock; running it again", **fields)
    else:
        log.info("transaction running again", reason=str(exc), **fields)
