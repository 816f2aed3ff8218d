"""Workflows with updates served by the end-to-end tests' worker subprocesses."""

from __future__ import annotations

from datetime import timedelta

from chronicle import workflow


@workflow
async def slow_counter() -> int:
    """A counter whose ``bump`` update sleeps (durably) before it counts: a test kills the
    worker while the handler waits."""
    count = [0]
    done = [False]

    async def bump(by: int) -> int:
        await workflow.sleep(timedelta(seconds=2))
        count[0] += by
        return count[0]

    def finish() -> int:
        done[0] = True
        return count[0]

    workflow.on_update("bump", bump)
    workflow.on_update("finish", finish)
    await workflow.wait_condition(lambda: done[0])
    return count[0]
