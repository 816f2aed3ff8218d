"""Workflows for the database-outage test (``test_postgres_crash.py``): sequential activities,
half of them quick enough to run inline and half dispatched, and a durable timer."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from chronicle import RetryPolicy, activity, workflow

RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=20)
TIMER = timedelta(milliseconds=300)
TIMEOUT = timedelta(seconds=60)
"""Activity and workflow task timeouts: far beyond the test's waits, so a task that reached
nobody shows as a workflow that does not finish, instead of being retried after its timeout."""


@activity(start_to_close_timeout=TIMEOUT, retry=RETRY)
async def quick_add(value: int, step: int) -> int:
    """value + step at once: run inline with the workflow task (docs/inline-activities.md)."""
    return value + step


@activity(start_to_close_timeout=TIMEOUT, retry=RETRY)
async def slow_add(value: int, step: int) -> int:
    """value + step after 50 ms, past the inline budget: dispatched through the task queue."""
    await asyncio.sleep(0.05)
    return value + step


@workflow
async def steps_and_timer(start: int, steps: int, timer_at: int) -> int:
    """``start + 1 + 2 + … + steps``, one activity per step; a timer before step
    ``timer_at``."""
    value = start
    for step in range(1, steps + 1):
        if step == timer_at:
            await workflow.sleep(TIMER)
        add = quick_add if step % 2 else slow_add
        value = await add(value, step)
    return value


def expected(start: int, steps: int) -> int:
    """What ``steps_and_timer(start, steps)`` returns."""
    return start + steps * (steps + 1) // 2
