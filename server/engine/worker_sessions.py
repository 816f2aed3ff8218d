"""Open worker sessions, shared by every replica (the ``worker_sessions`` table).

A worker holds one ``WorkerSession`` stream at a time, on the server it is connected to. When it
gives a server up (the server froze, the path to it broke) it opens a new session on another
replica and goes on working, while the old server may only see its session end much later.
Each session is therefore a row, written when it opens and deleted when it ends on its server;
the old server's ``workers.worker_lost`` asks ``moved_to`` whether a *newer* session of the same
(namespace, identity) is open anywhere, and if so leaves the worker's tasks alone
(docs/decisions.md §8).

Times are the database's (``now()``), never a replica's clock. Rows of a server that was killed
stay until the same worker opens a session again (``OPEN_WORKER_SESSION`` sweeps its older
rows); only a session opened before such a row can be misled by it, and then the tasks' own
timeouts still apply.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from chronicle.server import telemetry
from chronicle.server.engine.services import Services
from chronicle.server.store import sql
from chronicle.server.store.pool import Conn, Pool


@dataclass(slots=True)
class WorkerSession:
    """One session stream held on this server, and when the database recorded its opening."""

    namespace: str
    identity: str
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    opened_at: datetime | None = None
    """The row's ``opened_at`` (None until its insert committed, or when it never did)."""


async def record_open(services: Services, session: WorkerSession) -> None:
    """Write the session's row (and sweep the worker's older ones); sets ``opened_at``.

    Raises what the database raised: the session is not established, and the worker opens
    another one later."""
    async with services.pool.acquire() as conn:
        session.opened_at = await conn.fetchval(
            sql.OPEN_WORKER_SESSION,
            session.session_id,
            session.namespace,
            session.identity,
            services.server_id,
        )


async def record_close(services: Services, session: WorkerSession) -> None:
    """Delete the session's row; learn its ``opened_at`` from it when the open's answer was
    lost (cancelled while the insert ran). A failure is logged: the row stays, and can only
    keep a replica from timing out the worker's tasks early for a session older than it."""
    try:
        async with services.pool.acquire() as conn:
            opened_at = await conn.fetchval(sql.CLOSE_WORKER_SESSION, session.session_id)
    except Exception as exc:
        telemetry.logger(namespace=session.namespace, identity=session.identity).warning(
            "could not delete an ended worker session's row; it stays until the worker opens "
            "a session again",
            session_id=session.session_id,
            error=repr(exc),
        )
        return
    if session.opened_at is None and opened_at is not None:
        session.opened_at = opened_at


async def moved_to(conn: Conn, session: WorkerSession) -> str | None:
    """The server holding a session of the same worker opened after ``session`` (None: none is
    open anywhere, or ``session``'s opening time is unknown)."""
    if session.opened_at is None:
        return None
    server: str | None = await conn.fetchval(
        sql.NEWER_WORKER_SESSION,
        session.namespace,
        session.identity,
        session.session_id,
        session.opened_at,
    )
    return server


async def close_server(pool: Pool, server_id: str) -> None:
    """Delete the rows of every session held by server ``server_id`` (it is stopping)."""
    async with pool.acquire() as conn:
        await conn.execute(sql.CLOSE_SERVER_SESSIONS, server_id)
