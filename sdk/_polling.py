"""Long polls for tasks, shared by the workflow and the activity worker.

A poller takes a slot *before* it polls, so a worker never leases a task it has no room for; a
task goes to ``start``, which owns the slot from then on, and an empty poll gives the slot back.
Transport failures are absorbed, so a poller outlives a server restart of any length.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from chronicle.sdk import _grpc

__all__ = ["POLL_TIMEOUT", "poll", "poll_into_slots"]

POLL_TIMEOUT = 30.0
"""Client-side deadline of one long poll (the server answers empty after about 20 s)."""


async def poll_into_slots(
    slots: asyncio.Semaphore,
    connection: _grpc.Connection,
    method: str,
    request: Any,
    log: Any,
    start: Callable[[Any], None],
) -> None:
    """Poll ``method`` forever: take a slot, long-poll, and hand a task to ``start``, which owns
    the slot from then on; an empty poll gives it back."""
    while True:
        await slots.acquire()
        try:
            task = await poll(connection, method, request, log)
        except BaseException:
            slots.release()
            raise
        if task is None or not task.task_token:
            slots.release()
            continue
        start(task)


async def poll(connection: _grpc.Connection, method: str, request: Any, log: Any) -> Any:
    """One long poll; None when it came back empty or failed.

    Transport failures are logged and absorbed (after the connection's retries and a short
    back-off), so a poller survives a server restart of any length.
    """
    try:
        return await connection.call(method, request, timeout=POLL_TIMEOUT)
    except _grpc.ServerUnavailableError as exc:
        log.warning("server unreachable; still polling", method=method, error=str(exc))
    except _grpc.RPCError as exc:
        if exc.code == "DEADLINE_EXCEEDED":
            return None
        if connection.closed:
            raise asyncio.CancelledError from exc
        log.error("poll failed", method=method, error=str(exc))
        await asyncio.sleep(1.0)
    return None
