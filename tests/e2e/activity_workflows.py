"""Workflows and activities for the activity crash tests (served by worker subprocesses).

Each execution appends a line to $CHRONICLE_TEST_LOG so a test can count real runs.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta

from chronicle import RetryPolicy, activity, workflow

RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=5)


def _record(line: str) -> None:
    path = os.environ.get("CHRONICLE_TEST_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(line + "\n")


@activity
async def count_to(n: int) -> list[int]:
    """Counts to ``n``, heartbeating each step; resumes after the last heartbeated step."""
    info = activity.info()
    start = info.heartbeat_details[0] + 1 if info.heartbeat_details else 0
    _record(f"count_to attempt {info.attempt} starts at {start}")
    for step in range(start, n):
        activity.heartbeat(step)
        _record(f"step {step}")
        await asyncio.sleep(0.1)
    return [info.attempt, start]


@workflow
async def counts(n: int) -> list[int]:
    """One long heartbeating activity: a killed worker is noticed by the heartbeat timeout."""
    return await workflow.execute_activity(
        count_to,
        n,
        heartbeat_timeout=timedelta(seconds=1),
        start_to_close_timeout=timedelta(seconds=60),
        retry=RETRY,
    )


@activity
async def slow_local(x: int) -> int:
    """A local activity slow enough for the test to kill the worker while it runs."""
    _record(f"slow_local {x}")
    await asyncio.sleep(1.0)
    return x * 10


@workflow
async def uses_local(x: int) -> int:
    """One local activity, then a regular result."""
    return await workflow.execute_local_activity(slow_local, x) + 1


@activity
async def approval(order: str) -> str:
    """Completed by someone else (a separate process) through its task token."""
    _record(activity.info().task_token.decode())
    activity.raise_complete_async()


@workflow
async def waits_for_approval(order: str) -> str:
    """Waits for the asynchronously completed ``approval``."""
    return await workflow.execute_activity(
        approval, order, start_to_close_timeout=timedelta(seconds=60)
    )


def _count(prefix: str) -> int:
    path = os.environ.get("CHRONICLE_TEST_LOG")
    if not path or not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as log:
        return sum(line.startswith(prefix) for line in log)


@activity
async def stalls_first_time() -> int:
    """The first run (across processes) hangs; later runs return how many runs there were."""
    _record("stalls_first_time")
    runs = _count("stalls_first_time")
    if runs == 1:
        await asyncio.sleep(600)
    return runs


@workflow
async def inline_then_crash() -> int:
    """One activity the worker runs inline; the test kills the worker while it hangs."""
    return await workflow.execute_activity(stalls_first_time, retry=RETRY)


@activity(start_to_close_timeout=timedelta(hours=1))
def blocks(seconds: float) -> str:
    """A sync activity that blocks its thread (and ignores cancellation) for ``seconds``."""
    _record("blocks started")
    time.sleep(seconds)
    return "done"


@workflow
async def runs_blocking(seconds: float) -> str:
    return await workflow.execute_activity(blocks, seconds)


@workflow
async def spins() -> str:
    """Workflow code stuck for good: the deadlock timeout gives its thread up."""
    _record("spins")
    while True:
        pass
