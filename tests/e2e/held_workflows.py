"""A workflow whose one activity runs until the test lets it end, for in-process workers.

``held`` records the attempt of every execution in ``RUNS`` and waits for ``RELEASE``, so a
test can tell whether a server timed the attempt out and had it run again.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from chronicle import activity, workflow

RUNS: list[int] = []
"""The attempt number of each execution of ``held``, in order."""
RELEASE = asyncio.Event()
"""Set by the test: ``held`` returns (create a new one per test: it binds no loop until used)."""


@activity(start_to_close_timeout=timedelta(minutes=10))
async def held(x: int) -> int:
    """x + 1, once the test sets ``RELEASE``."""
    RUNS.append(activity.info().attempt)
    await RELEASE.wait()
    return x + 1


@workflow
async def one_held_step(x: int) -> int:
    """One ``held`` activity."""
    return await held(x)
