"""Workflows for ``test_lost_poll_answers.py``, run by in-process workers.

``counted`` records the attempt of every execution in ``RUNS``; it allows one attempt with a
start-to-close of 60 s, so an attempt timed out (not put back) fails the workflow, and one left
to its timeout outlasts the test's wait.
"""

from __future__ import annotations

from datetime import timedelta

from chronicle import RetryPolicy, activity, workflow

RUNS: list[int] = []
"""The attempt number of each execution of ``counted``, in order."""


@activity(start_to_close_timeout=timedelta(seconds=60), retry=RetryPolicy(maximum_attempts=1))
async def counted(x: int) -> int:
    """x + 1."""
    RUNS.append(activity.info().attempt)
    return x + 1


@workflow
async def one_step(x: int) -> int:
    """x + 1, with no activity: one workflow task."""
    return x + 1


@workflow
async def counted_elsewhere(x: int, task_queue: str) -> int:
    """One ``counted`` activity on ``task_queue`` (served by another worker)."""
    return await workflow.execute_activity(counted, x, task_queue=task_queue)
