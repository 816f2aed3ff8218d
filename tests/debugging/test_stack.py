"""Where is it stuck? `handle.stack()` and `chronicle workflow stack ID` show every coroutine of
a running workflow and the file:line it awaits at, from the live instance or a replay."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from pathlib import Path

from chronicle.sdk.client import Client
from chronicle.sdk.worker import Worker
from chronicle.sdk.workflow import workflow
from chronicle.server.app import Server
from tests.debugging.cli_process import run_cli
from tests.sdk_io.helpers import eventually


def _line(marker: str) -> int:
    lines = Path(__file__).read_text().splitlines()
    return 1 + next(i for i, text in enumerate(lines) if text.endswith(f"# {marker}"))


async def _wait_for_approval() -> str:
    return str(await workflow.wait_signal("approve"))  # AWAIT_SIGNAL


async def _cool_down() -> None:
    await workflow.sleep(timedelta(hours=1))  # AWAIT_TIMER


@workflow
async def two_branches() -> str:
    approval = asyncio.ensure_future(_wait_for_approval())
    cooling = asyncio.ensure_future(_cool_down())
    await asyncio.gather(approval, cooling)  # AWAIT_GATHER
    return approval.result()


async def test_stack_shows_every_coroutine_and_where_it_waits(
    server: Server, client: Client
) -> None:
    file = "tests/debugging/test_stack.py"
    async with Worker(client, task_queue="stack", workflows=[two_branches]):
        handle = await client.start(two_branches, id="stack-1", task_queue="stack")

        async def waiting() -> bool | None:
            events = await handle.history()
            return True if events[-1].type == "TimerStarted" else None

        await eventually(waiting)
        text = await handle.stack()
        status, out, err = await run_cli(
            "--address", f"127.0.0.1:{server.port}", "workflow", "stack", "stack-1"
        )
    assert text.startswith(f"workflow 'stack-1' (run {handle.run_id}, type two_branches): 3 ")
    blocks = re.split(r"\n  (?=\S)", text)[1:]  # one block per coroutine
    assert len(blocks) == 3
    assert blocks[0].startswith("workflow function:")
    assert f"{file}:{_line('AWAIT_GATHER')} in two_branches: await asyncio.gather" in blocks[0]
    signal_line = f"{file}:{_line('AWAIT_SIGNAL')} in _wait_for_approval"
    timer_line = f"{file}:{_line('AWAIT_TIMER')} in _cool_down"
    assert any(signal_line in block for block in blocks[1:])
    assert any(timer_line in block for block in blocks[1:])
    assert "chronicle/sdk" not in text  # SDK frames are left out
    assert status == 0, err
    assert out.strip() == text.strip()


async def test_stack_without_the_cached_instance_replays_the_history(
    server: Server, client: Client
) -> None:
    async with Worker(client, task_queue="stack", workflows=[two_branches]):
        handle = await client.start(two_branches, id="stack-2", task_queue="stack")

        async def waiting() -> bool | None:
            events = await handle.history()
            return True if events[-1].type == "TimerStarted" else None

        await eventually(waiting)
    async with Worker(client, task_queue="stack", workflows=[two_branches]):  # a fresh cache
        text = await handle.stack()
    assert f"test_stack.py:{_line('AWAIT_SIGNAL')} in _wait_for_approval" in text
