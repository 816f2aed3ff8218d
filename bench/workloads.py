"""The benchmark workflows and activities (served by the benchmark's worker subprocess)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from chronicle import activity, workflow


@activity(start_to_close_timeout=timedelta(seconds=10))
async def inc(x: int) -> int:
    """The trivial activity of every workload: x + 1."""
    return x + 1


@workflow
async def sequential(steps: int) -> int:
    """W1 (10 steps) and W3 (1,000 steps): ``steps`` sequential activities."""
    value = 0
    for _ in range(steps):
        value = await inc(value)
    return value


@workflow
async def local_sequential(steps: int) -> int:
    """LA: ``steps`` sequential local activities (run in the workflow's worker)."""
    value = 0
    for _ in range(steps):
        value = await workflow.execute_local_activity(inc, value)
    return value


@workflow
async def three_steps() -> int:
    """W2: three sequential activities."""
    value = 0
    for _ in range(3):
        value = await inc(value)
    return value


@workflow
async def no_steps() -> int:
    """W0: a workflow with no activity (W2's per-workflow cost besides its steps)."""
    return 0


@workflow
async def one_timer(seconds: float) -> float:
    """W4: one durable timer."""
    await workflow.sleep(timedelta(seconds=seconds))
    return seconds


@activity(start_to_close_timeout=timedelta(seconds=2))
async def slow_inc(x: int) -> int:
    """W5: an activity slow enough to kill a worker in the middle of a run."""
    await asyncio.sleep(0.05)
    return x + 1


@workflow
async def slow_sequential(steps: int) -> int:
    """W5: sequential slow activities."""
    value = 0
    for _ in range(steps):
        value = await slow_inc(value)
    return value
