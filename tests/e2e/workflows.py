"""Workflows and activities served by the end-to-end tests' worker subprocesses.

Activities append one line per *execution* to the file named by $CHRONICLE_TEST_LOG, so a test
can tell how often an activity really ran (at-least-once) from how often its result was recorded
(exactly once).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import timedelta

from chronicle import ApplicationError, RetryPolicy, activity, workflow

FAST_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=5)


def _record(line: str) -> None:
    path = os.environ.get("CHRONICLE_TEST_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(line + "\n")


@dataclass
class Order:
    """A dataclass argument, rebuilt from the type hints on the other side."""

    order_id: str
    cents: int


@activity
async def increment(x: int) -> int:
    """x + 1."""
    _record(f"increment {x}")
    return x + 1


@activity(start_to_close_timeout=timedelta(seconds=3), retry=FAST_RETRY)
async def slow_increment(x: int) -> int:
    """x + 1 after a pause, long enough for a test to kill the worker mid-activity."""
    _record(f"slow_increment {x} attempt {activity.info().attempt}")
    await asyncio.sleep(0.4)
    return x + 1


@activity(start_to_close_timeout=timedelta(hours=1), retry=FAST_RETRY)
async def stalls_on_first_attempt(x: int) -> int:
    """Hangs on attempt 1 (until its worker is killed); later attempts return x + 1."""
    attempt = activity.info().attempt
    _record(f"stalls_on_first_attempt {x} attempt {attempt}")
    if attempt == 1:
        await asyncio.sleep(3600)
    return x + 1


@workflow
async def stalled_step(x: int) -> int:
    """One activity whose first attempt only ends when its worker dies."""
    return await stalls_on_first_attempt(x)


@activity
def sync_double(x: int) -> int:
    """A sync activity: runs in the worker's thread pool."""
    return x * 2


@activity(retry=FAST_RETRY)
async def flaky(succeed_on_attempt: int) -> str:
    """Fails until attempt ``succeed_on_attempt``."""
    attempt = activity.info().attempt
    if attempt < succeed_on_attempt:
        raise RuntimeError(f"flaky failure on attempt {attempt}")
    return f"ok on attempt {attempt}"


@activity(retry=FAST_RETRY)
async def rejects(reason: str) -> str:
    """Always fails with a non-retryable application error."""
    raise ApplicationError(f"rejected: {reason}", non_retryable=True, type="CardDeclined")


@activity
async def describe_order(order: Order) -> str:
    """Receives a dataclass."""
    return f"{order.order_id}:{order.cents}"


@workflow
async def add_steps(start: int, steps: int) -> int:
    """``steps`` sequential activities, each adding one."""
    value = start
    for _ in range(steps):
        value = await increment(value)
    return value


@workflow
async def slow_steps(start: int, steps: int) -> int:
    """Like add_steps, with slow activities (for crash tests)."""
    value = start
    for _ in range(steps):
        value = await slow_increment(value)
    return value


@workflow
async def fan_out(values: list[int]) -> list[int]:
    """Activities in parallel with asyncio.gather; results in argument order."""
    return list(await asyncio.gather(*(increment(v) for v in values)))


@workflow
async def mixed(x: int) -> int:
    """A sync activity and a durable timer."""
    doubled = await workflow.execute_activity(
        sync_double, x, start_to_close_timeout=timedelta(seconds=10)
    )
    await workflow.sleep(timedelta(milliseconds=200))
    return int(doubled)


@workflow
async def retries_then_succeeds(attempts: int) -> str:
    """An activity that fails attempts-1 times."""
    return await flaky(attempts)


@workflow
async def fails_with_activity_error(reason: str) -> str:
    """Lets the activity's ActivityError escape: the run fails."""
    return await rejects(reason)


@workflow
async def catches_activity_error(reason: str) -> str:
    """Catches the ActivityError and reports its cause."""
    from chronicle import ActivityError

    try:
        return await rejects(reason)
    except ActivityError as err:
        cause = err.cause
        return f"caught {type(cause).__name__}: {cause}"


@workflow
async def takes_dataclass(order: Order) -> str:
    """Dataclass in, via an activity."""
    return await describe_order(order)


@workflow
async def buggy(x: int) -> int:
    """A bug (KeyError) in workflow code: the workflow *task* fails and is retried."""
    table: dict[str, int] = {}
    return table[f"missing-{x}"]
