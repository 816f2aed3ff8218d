"""A worker reopens a broken ``WorkerSession`` at once after a session that was established,
whatever its earlier failed attempts made the back-off (sdk/worker.py ``_hold_session``).

While a worker holds no session, the server cannot tell it is gone: a worker that dies then
leaves its tasks to their timeouts. Before the fix the back-off between reopens grew with each
failed attempt (to 5 s) and only came back down when a session ended cleanly: after an outage
every later break, however long the sessions between them lasted, waited 5 s for the reopen.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from chronicle import Client, Worker
from tests.e2e import workflows as wf
from tests.e2e.processes import ServerProcess, free_port
from tests.e2e.tcp_proxy import TcpProxy

OUTAGE = 7.0
"""Seconds the server is out of reach: the reopen back-off grows to its 5 s cap meanwhile
(0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 3.2 s of waits)."""
REOPEN_BOUND = 3.0
"""The wait for the reopen after a break of an established session (5 s before the fix)."""


async def _session_ids(database_url: str, identity: str) -> set[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT session_id FROM worker_sessions WHERE identity = $1", identity
        )
    finally:
        await conn.close()
    return {row["session_id"] for row in rows}


async def _new_session(database_url: str, identity: str, old: set[str], bound: float) -> str:
    """The id of a session of ``identity`` not in ``old``, once open (within ``bound`` s)."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        new = await _session_ids(database_url, identity) - old
        if new:
            return new.pop()
        await asyncio.sleep(0.05)
    raise AssertionError(f"worker {identity} opened no new session within {bound} s")


async def test_an_established_session_that_breaks_is_reopened_at_once(
    database_url: str, server: ServerProcess, proxy: TcpProxy
) -> None:
    proxy.target = server.port
    client = await Client.connect(proxy.address)
    worker = Worker(
        client, task_queue="session-reopen", workflows=[wf.add_steps], activities=[wf.increment]
    )
    try:
        async with worker:
            first = await _new_session(database_url, worker.identity, set(), 15)
            # An outage: every reopen fails (nothing listens behind the proxy) for long
            # enough that the back-off reaches its cap.
            proxy.target = free_port()
            proxy.cut()
            await asyncio.sleep(OUTAGE)
            proxy.target = server.port
            second = await _new_session(database_url, worker.identity, {first}, 15)
            # The session is established again; now it breaks once more.
            proxy.cut()
            await _new_session(database_url, worker.identity, {first, second}, REOPEN_BOUND)
    finally:
        await client.close()
