"""A server that stops answering without closing its connections (a frozen process or a host
gone without a FIN: here SIGSTOP) is noticed by the SDK's keepalive pings: the worker gives the
connection up within the ping interval plus its timeout, and its calls go to a new connection,
here answered by another server at the same address (docs/decisions.md §8).

The worker reaches the servers through a TCP proxy (the stable address, as a load balancer or
a DNS name would be): the proxy stays alive and acknowledges every byte, so only an unanswered
HTTP/2 ping can tell the worker that the server behind it froze.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from chronicle import Client, Worker
from chronicle.server import app
from tests.e2e import workflows as wf
from tests.e2e.processes import ServerProcess, free_port
from tests.e2e.tcp_proxy import TcpProxy

PING_INTERVAL = 6.0
"""The worker's keepalive interval: longer than the shortest a Chronicle server accepts on a
connection without data, so no ping earns a strike (GOAWAY ``too_many_pings`` would make the
worker reconnect by itself)."""
PING_TIMEOUT = 2.0
"""How long the worker waits for a ping's answer."""
NOTICE_SLACK = 7.0
"""On top of interval + timeout: the bound on the wait for the worker to give up (noise)."""


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    """A TCP proxy, started with no useful target yet."""
    started = await TcpProxy(target=0).start()
    try:
        yield started
    finally:
        await started.close()


async def test_a_frozen_server_is_noticed_and_the_worker_moves_to_a_live_one(
    database_url: str, proxy: TcpProxy
) -> None:
    """Without the SDK's pings the worker would wait on the frozen connection for good (its
    long polls time out and are sent on the same connection again): the wait runs out."""
    assert PING_INTERVAL * 1000 > app.MIN_CLIENT_PING_INTERVAL_MS
    frozen = ServerProcess(database_url, free_port()).start_listening()
    live = ServerProcess(database_url, free_port()).start_listening()
    proxy.target = frozen.port
    worker_client = await Client.connect(
        proxy.address, keepalive_interval=PING_INTERVAL, keepalive_timeout=PING_TIMEOUT
    )
    client = await Client.connect(live.address)
    worker = Worker(
        worker_client,
        task_queue="frozen-server",
        workflows=[wf.add_steps],
        activities=[wf.increment],
    )
    try:
        async with worker:
            # The worker works through the proxy on `frozen` (a run started on `live` wakes
            # the worker's poll on `frozen` through Postgres).
            first = await client.start(
                wf.add_steps, 0, 1, id="before-freeze", task_queue="frozen-server"
            )
            assert await asyncio.wait_for(first.result(), 20) == 1
            before = list(proxy.connections)
            assert before
            assert {c.target for c in before} == {frozen.port}
            assert frozen.process is not None
            # Let the connection go quiet: the pings gRPC sends as results arrive are answered
            # now, so from here on only the keepalive pings can find the server frozen.
            await asyncio.sleep(1.0)
            proxy.target = live.port
            os.kill(frozen.process.pid, signal.SIGSTOP)

            bound = PING_INTERVAL + PING_TIMEOUT + NOTICE_SLACK
            noticed = asyncio.gather(*(c.client_closed.wait() for c in before))
            try:
                await asyncio.wait_for(noticed, bound)
            except TimeoutError:
                pytest.fail(f"the worker kept its connection to the frozen server for {bound} s")

            second = await client.start(
                wf.add_steps,
                0,
                2,
                id="after-freeze",
                task_queue="frozen-server",
                task_timeout=timedelta(seconds=60),  # far beyond the wait below
            )
            assert await asyncio.wait_for(second.result(), 15) == 2
            assert any(c.target == live.port for c in proxy.connections)
    finally:
        await client.close()
        await worker_client.close()
        frozen.kill()  # SIGKILL ends a stopped process too
        live.kill()
