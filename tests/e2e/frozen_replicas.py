"""Two server replicas behind one TCP proxy, and freezing the one the worker uses: the set-up
of the frozen-server tests (``test_frozen_server.py``, ``test_frozen_replica_sessions.py``).

The worker reaches the servers through the proxy (their stable address, as a load balancer or
a DNS name would be): the proxy stays alive and acknowledges every byte, so only an unanswered
HTTP/2 keepalive ping can tell the worker that the server behind it froze.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from chronicle import Client
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


@dataclass
class Replicas:
    """``frozen`` (behind the proxy at first), ``live``, a client for the worker (through the
    proxy, pinging every ``PING_INTERVAL`` s) and one for the test (on ``live``)."""

    frozen: ServerProcess
    live: ServerProcess
    worker_client: Client
    client: Client


@contextlib.asynccontextmanager
async def replicas_behind(database_url: str, proxy: TcpProxy) -> AsyncIterator[Replicas]:
    """Start two servers on ``database_url`` with ``proxy`` pointing at the first; kill both
    and close the clients afterwards."""
    frozen = ServerProcess(database_url, free_port()).start_listening()
    live = ServerProcess(database_url, free_port()).start_listening()
    proxy.target = frozen.port
    clients: list[Client] = []
    try:
        clients.append(
            await Client.connect(
                proxy.address, keepalive_interval=PING_INTERVAL, keepalive_timeout=PING_TIMEOUT
            )
        )
        clients.append(await Client.connect(live.address))
        yield Replicas(frozen, live, clients[0], clients[1])
    finally:
        for client in clients:
            await client.close()
        frozen.kill()  # SIGKILL ends a stopped process too
        live.kill()


async def freeze_and_move(replicas: Replicas, proxy: TcpProxy) -> None:
    """Point the proxy at ``live``, SIGSTOP ``frozen``, and wait until the worker gave up its
    connections to it (fails the test after interval + timeout + slack)."""
    assert replicas.frozen.process is not None
    # Let the connection go quiet: the pings gRPC sends as results arrive are answered now,
    # so from here on only the keepalive pings can find the server frozen.
    await asyncio.sleep(1.0)
    before = list(proxy.connections)
    assert before
    assert {c.target for c in before} == {replicas.frozen.port}
    proxy.target = replicas.live.port
    os.kill(replicas.frozen.process.pid, signal.SIGSTOP)
    bound = PING_INTERVAL + PING_TIMEOUT + NOTICE_SLACK
    try:
        await asyncio.wait_for(asyncio.gather(*(c.client_closed.wait() for c in before)), bound)
    except TimeoutError:
        pytest.fail(f"the worker kept its connection to the frozen server for {bound} s")
