"""Long polls for tasks, shared by the workflow and the activity worker.

A poller takes a slot *before* it polls, so a worker never leases a task it has no room for; a
task goes to ``start``, which owns the slot from then on, and an empty poll gives the slot back.
Transport failures are absorbed, so a poller outlives a server restart of any length.

Each attempt of a poll carries a fresh request id. One that fails without a definite refusal
(its connection broke, ``UNAVAILABLE``, its deadline passed) may have had a task started for it
whose answer is lost: its id goes to ``LostPolls``, which releases that task (``_lost_answers.py``,
docs/decisions.md §8).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from chronicle.sdk import _grpc
from chronicle.sdk._lost_answers import LostPolls, definite_refusal, new_request_id

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
    lost: LostPolls | None = None,
) -> None:
    """Poll ``method`` forever: take a slot, long-poll, and hand a task to ``start``, which owns
    the slot from then on; an empty poll gives it back. Polls whose answer may be lost go to
    ``lost``."""
    while True:
        await slots.acquire()
        try:
            task = await poll(connection, method, request, log, lost)
        except BaseException:
            slots.release()
            raise
        if task is None or not task.task_token:
            slots.release()
            continue
        start(task)


async def poll(
    connection: _grpc.Connection,
    method: str,
    request: Any,
    log: Any,
    lost: LostPolls | None = None,
) -> Any:
    """One long poll; None when it came back empty or failed.

    Transport failures are logged and absorbed (after the connection's retries and a short
    back-off), so a poller survives a server restart of any length. ``request.request_id`` is
    set afresh for each attempt; the ids of attempts that failed without a definite refusal go
    to ``lost`` (their answer, a task started for this worker, may be lost).
    """
    failed: list[str] = []

    def renew() -> None:  # released at once: the retry may wait long for its own answer
        if lost is not None:
            lost.lost([request.request_id])
        request.request_id = new_request_id()

    request.request_id = new_request_id()
    pause = False
    try:
        return await connection.call(method, request, timeout=POLL_TIMEOUT, before_retry=renew)
    except _grpc.ServerUnavailableError as exc:
        failed.append(request.request_id)
        log.warning("server unreachable; still polling", method=method, error=str(exc))
    except _grpc.RPCError as exc:
        if connection.closed:
            raise asyncio.CancelledError from exc
        if not definite_refusal(exc):
            failed.append(request.request_id)
        if exc.code != "DEADLINE_EXCEEDED":
            log.error("poll failed", method=method, error=str(exc))
            pause = True
    finally:
        if failed and lost is not None:
            lost.lost(failed)
    if pause:
        await asyncio.sleep(1.0)
    return None
