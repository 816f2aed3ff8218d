"""An accepted update survives a SIGKILL of the worker running its handler."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from tests.e2e import update_workflows as wf
from tests.e2e.processes import ManagedProcess, ServerProcess, start_worker
from tests.e2e.test_crash import wait_for_events

MODULE = "tests.e2e.update_workflows"


async def test_worker_sigkill_inside_an_update_handler_a_new_worker_finishes_it(
    server: ServerProcess, client: Any
) -> None:
    first = start_worker(server.address, MODULE, "upd-crash")
    second: ManagedProcess | None = None
    try:
        handle = await client.start(
            wf.slow_counter,
            id="upd-crash",
            task_queue="upd-crash",
            task_timeout=timedelta(seconds=2),
        )
        update = asyncio.ensure_future(handle.update("bump", 5, update_id="bump-1"))
        await wait_for_events(handle, "TimerStarted", 1)  # the handler is inside its sleep
        first.kill()
        assert not update.done()
        second = start_worker(server.address, MODULE, "upd-crash")
        assert await asyncio.wait_for(update, 60) == 5
        # The caller whose connection dropped asks again with the id: the same outcome.
        assert await handle.update("bump", 5, update_id="bump-1") == 5
        assert await handle.update("finish") == 5
        assert await asyncio.wait_for(handle.result(), 30) == 5
        history = await handle.history()
        bumps = [e for e in history if getattr(e.attributes, "update_id", "") == "bump-1"]
        assert [e.type for e in bumps] == ["UpdateAccepted", "UpdateCompleted"]
        assert sum(1 for e in history if e.type == "TimerStarted") == 1
    finally:
        first.kill()
        if second is not None:
            second.kill()
