"""A worker that stops answering without closing its connection (a frozen or vanished host:
here SIGSTOP) is noticed by the server's keepalive pings and treated as lost, like a killed one.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chronicle import Client
from chronicle.server.app import Server
from tests.e2e import activity_workflows as aw
from tests.e2e.processes import start_worker
from tests.e2e.test_activity_crash import read_lines, wait_for_lines
from tests.e2e.test_crash import wait_for_events
from tests.sdk_io.helpers import server_config

MODULE = "tests.e2e.activity_workflows"


@pytest.fixture
async def pinging_server(database_url: str) -> AsyncIterator[Server]:
    """An in-process server that pings every second and gives a peer one second to answer."""
    config = server_config(database_url).model_copy(
        update={"keepalive_interval": 1.0, "keepalive_timeout": 1.0}
    )
    server = Server(config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0)


async def test_a_frozen_worker_is_lost_and_its_activity_retried_elsewhere(
    pinging_server: Server, tmp_path: Path
) -> None:
    """The activity's start-to-close is the server's default (5 minutes) and nothing
    heartbeats: only the unanswered pings can end attempt 1 within the test's 30 s."""
    address = f"127.0.0.1:{pinging_server.port}"
    log = tmp_path / "runs.log"
    first = start_worker(
        address, MODULE, "frozen", "--inline-activity-budget", "0.05", CHRONICLE_TEST_LOG=str(log)
    )
    second = None
    client = await Client.connect(address)
    try:
        handle = await client.start(aw.inline_then_crash, id="frozen-1", task_queue="frozen")
        await wait_for_lines(log, "stalls_first_time", 1)
        await wait_for_events(handle, "ActivityScheduled", 1)  # recorded as started by `first`
        assert first.process is not None
        os.kill(first.process.pid, signal.SIGSTOP)
        second = start_worker(address, MODULE, "frozen", CHRONICLE_TEST_LOG=str(log))
        assert await asyncio.wait_for(handle.result(), 30) == 2
        history = await handle.history()
        assert [e.id for e in history] == list(range(1, len(history) + 1))
        activity = [e.type for e in history if e.type.startswith("Activity")]
        assert activity == ["ActivityScheduled", "ActivityCompleted"]
        [completed] = [e for e in history if e.type == "ActivityCompleted"]
        assert completed.attributes.attempt == 2
        assert len(read_lines(log)) == 2
    finally:
        await client.close()
        first.kill()  # SIGKILL ends a stopped process too
        if second is not None:
            second.kill()
