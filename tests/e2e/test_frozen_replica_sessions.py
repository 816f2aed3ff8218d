"""A replica that froze while a worker ran an activity it started, and resumed after the worker
moved to another replica, does not declare the worker lost: the activity runs exactly once
(docs/decisions.md §8, ``worker_sessions``).

As in ``test_frozen_server.py``, the worker reaches the servers through a TCP proxy (their
stable address) and gives the frozen server up on an unanswered keepalive ping. When the
frozen server resumes it sees the worker's old session end (the proxy reset that connection);
the worker's newer session on the other replica tells it the worker is alive.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from datetime import timedelta

from chronicle import Worker
from tests.e2e import held_workflows as held
from tests.e2e import workflows as wf
from tests.e2e.frozen_replicas import freeze_and_move, replicas_behind
from tests.e2e.processes import ServerProcess
from tests.e2e.tcp_proxy import TcpProxy

SETTLE = 2.0
"""``ServerConfig.lost_worker_settle``'s default: the lost-worker pass runs again after it."""
SKIPPED = "holds a newer session"
"""In the resumed server's log when it leaves a moved worker's tasks alone."""


async def _until(check: Callable[[], bool], bound: float) -> bool:
    """Whether ``check()`` came true within ``bound`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    while loop.time() < deadline:
        if check():
            return True
        await asyncio.sleep(0.1)
    return False


def _skipped(server: ServerProcess) -> bool:
    return any(SKIPPED in line for line in server.output)


async def test_a_resumed_replica_leaves_the_moved_worker_s_activity_running(
    database_url: str, proxy: TcpProxy
) -> None:
    """Before ``worker_sessions`` the resumed server timed the attempt out at once and the
    worker ran the activity a second time (attempt 2)."""
    held.RUNS.clear()
    held.RELEASE = asyncio.Event()
    async with replicas_behind(database_url, proxy) as replicas:
        client, frozen = replicas.client, replicas.frozen
        worker = Worker(
            replicas.worker_client,
            task_queue="moving-worker",
            workflows=[held.one_held_step, wf.add_steps],
            activities=[held.held, wf.increment],
        )
        try:
            async with worker:
                handle = await client.start(
                    held.one_held_step,
                    1,
                    id="held-across-freeze",
                    task_queue="moving-worker",
                    task_timeout=timedelta(seconds=60),
                )
                assert await _until(lambda: held.RUNS == [1], 20), "the activity never started"
                await freeze_and_move(replicas, proxy)
                # The worker works through the live replica now (and reopened its session
                # there, 0.1 s after the old one's call failed).
                moved = await client.start(
                    wf.add_steps,
                    0,
                    1,
                    id="after-move",
                    task_queue="moving-worker",
                    task_timeout=timedelta(seconds=60),
                )
                assert await asyncio.wait_for(moved.result(), 15) == 1
                await asyncio.sleep(1.0)

                assert frozen.process is not None
                os.kill(frozen.process.pid, signal.SIGCONT)
                # The resumed server handles the old session's end: it leaves the tasks alone
                # (its log says so) or, as before, times the attempt out (attempt 2 runs).
                handled = await _until(lambda: _skipped(frozen) or len(held.RUNS) > 1, 20)
                assert handled, "the resumed server never handled the worker's old session"
                await asyncio.sleep(SETTLE + 1.0)  # its second pass, too
                assert held.RUNS == [1], "the resumed server timed the moved worker's activity out"
                held.RELEASE.set()
                assert await asyncio.wait_for(handle.result(), 15) == 2
                assert held.RUNS == [1]
        finally:
            held.RELEASE.set()
