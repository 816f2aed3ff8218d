"""A task whose poll answer was lost runs again at once, though the worker opened its newer
session before the old server saw the break (docs/decisions.md §8, the poll releases).

The worker reaches server A through a TCP proxy. The proxy goes silent (``hold``): A's replies
vanish while A sees nothing wrong. A task is started for one of the worker's polls still
waiting on A, and its answer vanishes. Then the proxy cuts the worker's side only
(``drop_held``): the worker sees its connection end at once and reconnects, through the proxy,
to replica B, where it opens its newer session; A keeps the old connection until its keepalive
gives it up (15 s + 10 s), and even then leaves the worker's tasks alone, since a newer session
is open. Before the releases the task waited for its timeout, 60 s here; the test waits 20 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg

from chronicle import Client, Worker
from tests.e2e import lost_poll_workflows as lp
from tests.e2e.processes import ServerProcess
from tests.e2e.tcp_proxy import TcpProxy

WAIT = 20.0
"""The test's bound on the retried task (its timeout is 60 s)."""


async def _until(check: Callable[[], Awaitable[bool]], bound: float, what: str) -> None:
    deadline = time.monotonic() + bound
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not within {bound} s"
        await asyncio.sleep(0.05)


async def _fetch(database_url: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def _sessions(database_url: str, identity: str) -> set[str]:
    rows = await _fetch(
        database_url, "SELECT session_id FROM worker_sessions WHERE identity = $1", identity
    )
    return {row["session_id"] for row in rows}


async def _connected(database_url: str, identity: str) -> None:
    """Once the worker's session is open; its polls are out by then too (they start first),
    and get 1 s more to reach the server."""

    async def opened() -> bool:
        return bool(await _sessions(database_url, identity))

    await _until(opened, 15, "the worker's session")
    await asyncio.sleep(1.0)


def _session_ended(server: ServerProcess) -> bool:
    """Whether ``server`` saw a worker session end (``workers.worker_lost`` logs it)."""
    return any("worker session" in line for line in server.output)


async def test_a_workflow_task_whose_poll_answer_was_lost_runs_again_at_once(
    database_url: str,
    server: ServerProcess,
    replica: ServerProcess,
    client: Client,
    proxy: TcpProxy,
) -> None:
    proxy.target = server.port
    worker_client = await Client.connect(proxy.address)
    worker = Worker(worker_client, task_queue="lost-poll-wft", workflows=[lp.one_step])
    try:
        async with worker:
            await _connected(database_url, worker.identity)
            proxy.target = replica.port  # the worker's next connection reaches B
            proxy.hold()
            handle = await client.start(
                lp.one_step, 1, id="lost-poll-wft", task_queue="lost-poll-wft", task_timeout=60
            )

            async def started() -> bool:
                rows = await _fetch(
                    database_url,
                    "SELECT attributes->>'identity' AS identity FROM history_events "
                    "WHERE workflow_id = 'lost-poll-wft' AND event_type = 'WorkflowTaskStarted'",
                )
                return [row["identity"] for row in rows] == [worker.identity]

            await _until(started, 10, "the first workflow task started for the worker")
            proxy.drop_held()
            assert await asyncio.wait_for(handle.result(), WAIT) == 2
            # The gap's condition held: A had not seen the old session end yet.
            assert not _session_ended(server)
    finally:
        await worker_client.close()
    events = [e.type for e in await handle.history()]
    assert events[:5] == [
        "WorkflowStarted",
        "WorkflowTaskScheduled",
        "WorkflowTaskStarted",
        "WorkflowTaskTimedOut",  # released: its timeout moved to now
        "WorkflowTaskScheduled",
    ]


async def test_an_activity_whose_poll_answer_was_lost_is_queued_again_uncounted(
    database_url: str,
    server: ServerProcess,
    replica: ServerProcess,
    client: Client,
    proxy: TcpProxy,
) -> None:
    """The activity worker is the one behind the proxy; the workflow worker talks to A
    directly. ``counted`` allows one attempt: one timed out, not put back, fails the run."""
    lp.RUNS.clear()
    proxy.target = server.port
    worker_client = await Client.connect(proxy.address)
    activities = Worker(worker_client, task_queue="lost-poll-act", activities=[lp.counted])
    workflows = Worker(client, task_queue="lost-poll-wf", workflows=[lp.counted_elsewhere])
    try:
        async with activities, workflows:
            await _connected(database_url, activities.identity)
            proxy.target = replica.port
            proxy.hold()
            handle = await client.start(
                lp.counted_elsewhere,
                1,
                "lost-poll-act",
                id="lost-poll-act",
                task_queue="lost-poll-wf",
            )

            async def started() -> bool:
                rows = await _fetch(
                    database_url,
                    "SELECT last_worker_identity FROM activities "
                    "WHERE workflow_id = 'lost-poll-act' AND state = 'started'",
                )
                return [row["last_worker_identity"] for row in rows] == [activities.identity]

            await _until(started, 10, "the activity started for the worker")
            assert lp.RUNS == []  # its answer vanished
            proxy.drop_held()
            assert await asyncio.wait_for(handle.result(), WAIT) == 2
            assert not _session_ended(server)
    finally:
        await worker_client.close()
    assert lp.RUNS == [1]  # ran once, as attempt 1
