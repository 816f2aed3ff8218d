"""Crash safety of workflow semantics: a durable timer that falls due while the server and the
worker are SIGKILLed fires once they are back."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from tests.e2e import semantics_workflows as sw
from tests.e2e.processes import ServerProcess, start_worker
from tests.e2e.test_crash import wait_for_events

MODULE = "tests.e2e.semantics_workflows"


async def test_a_timer_due_while_server_and_worker_are_killed_fires_when_they_are_back(
    server: ServerProcess, client: Any
) -> None:
    duration = timedelta(seconds=1)
    worker = start_worker(server.address, MODULE, "crash-timer")
    try:
        handle = await client.start(
            sw.sleeper, duration.total_seconds(), id="crash-timer", task_queue="crash-timer"
        )
        await wait_for_events(handle, "TimerStarted", 1)
        server.kill()
        worker.kill()
        await asyncio.sleep(duration.total_seconds() * 1.5)  # stay down past the due time
        server.start_listening()
        worker = start_worker(server.address, MODULE, "crash-timer")
        assert await asyncio.wait_for(handle.result(), 60) == "woke"
    finally:
        worker.kill()
    history = await handle.history()
    [started] = [e for e in history if e.type == "TimerStarted"]
    [fired] = [e for e in history if e.type == "TimerFired"]
    assert fired.attributes.started_event_id == started.id
    assert fired.time >= started.time + duration
    assert [e.id for e in history] == list(range(1, len(history) + 1))
