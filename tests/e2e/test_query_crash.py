"""A query taken by a worker that is then SIGKILLed is answered by another worker at once."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from tests.e2e import query_workflows as wf
from tests.e2e.processes import ManagedProcess, ServerProcess, start_worker
from tests.e2e.test_crash import wait_for_events

MODULE = "tests.e2e.query_workflows"


async def _created(path: Path, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(path.exists):
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{path} not created within {timeout}s")
        await asyncio.sleep(0.05)


async def test_worker_sigkill_holding_a_query_another_worker_answers_it(
    server: ServerProcess, client: Any, tmp_path: Path
) -> None:
    """The first worker takes the query and is killed before answering. The query's client
    deadline is 60 s and the server waits 30 s for a taken query's answer; the second worker
    answers well within the 15 s this test waits."""
    marker = tmp_path / "taken"
    first = start_worker(server.address, MODULE, "qry-crash", **{wf.STALL_ENV: str(marker)})
    second: ManagedProcess | None = None
    try:
        handle = await client.start(wf.watched, id="qry-crash", task_queue="qry-crash")
        await wait_for_events(handle, "WorkflowTaskCompleted", 1)
        query = asyncio.ensure_future(handle.query("peek"))  # the client's deadline: 60 s
        await _created(marker, 30)  # the first worker holds the query
        argv = [sys.executable, "-m", "chronicle", "worker", MODULE, "--task-queue"]
        second = ManagedProcess("worker", [*argv, "qry-crash", "--address", server.address])
        second.start("worker started")
        first.kill()
        assert await asyncio.wait_for(query, 15) == "waiting"
        await handle.signal("finish")
        assert await asyncio.wait_for(handle.result(), 30) == "done"
    finally:
        first.kill()
        if second is not None:
            second.kill()
