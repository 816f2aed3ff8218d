"""Workflows for the eager-activity crash test (served by worker subprocesses).

Each activity execution appends a line with its attempt to the file named by
$CHRONICLE_TEST_LOG, so a test can count real runs.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

from chronicle import RetryPolicy, activity, workflow

ONE_ATTEMPT = RetryPolicy(maximum_attempts=1)
"""An attempt that timed out (or was counted in any way without running) fails the workflow."""


def _record(line: str) -> None:
    path = os.environ.get("CHRONICLE_TEST_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(line + "\n")


@activity(start_to_close_timeout=timedelta(seconds=60), retry=ONE_ATTEMPT)
async def counted_increment(x: int) -> int:
    """x + 1; records each execution with its attempt."""
    _record(f"counted_increment {x} attempt {activity.info().attempt}")
    return x + 1


@workflow
async def three_at_once(values: list[int]) -> list[int]:
    """Schedules one activity per value in one workflow task (eager dispatch starts up to 3)."""
    return list(await asyncio.gather(*(counted_increment(v) for v in values)))
