"""A server that stops answering without closing its connections (a frozen process or a host
gone without a FIN: here SIGSTOP) is noticed by the SDK's keepalive pings: the worker gives the
connection up within the ping interval plus its timeout, and its calls go to a new connection,
here answered by another server at the same address (docs/decisions.md §8).

The worker reaches the servers through a TCP proxy (``frozen_replicas.py``): only an
unanswered HTTP/2 ping can tell the worker that the server behind it froze.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from chronicle import Worker
from chronicle.server import app
from tests.e2e import workflows as wf
from tests.e2e.frozen_replicas import PING_INTERVAL, freeze_and_move, replicas_behind
from tests.e2e.tcp_proxy import TcpProxy


async def test_a_frozen_server_is_noticed_and_the_worker_moves_to_a_live_one(
    database_url: str, proxy: TcpProxy
) -> None:
    """Without the SDK's pings the worker would wait on the frozen connection for good (its
    long polls time out and are sent on the same connection again): the wait runs out."""
    assert PING_INTERVAL * 1000 > app.MIN_CLIENT_PING_INTERVAL_MS
    async with replicas_behind(database_url, proxy) as replicas:
        client = replicas.client
        worker = Worker(
            replicas.worker_client,
            task_queue="frozen-server",
            workflows=[wf.add_steps],
            activities=[wf.increment],
        )
        async with worker:
            # The worker works through the proxy on `frozen` (a run started on `live` wakes
            # the worker's poll on `frozen` through Postgres).
            first = await client.start(
                wf.add_steps, 0, 1, id="before-freeze", task_queue="frozen-server"
            )
            assert await asyncio.wait_for(first.result(), 20) == 1
            await freeze_and_move(replicas, proxy)

            second = await client.start(
                wf.add_steps,
                0,
                2,
                id="after-freeze",
                task_queue="frozen-server",
                task_timeout=timedelta(seconds=60),  # far beyond the wait below
            )
            assert await asyncio.wait_for(second.result(), 15) == 2
            assert any(c.target == replicas.live.port for c in proxy.connections)
