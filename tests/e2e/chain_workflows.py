"""A workflow that continues as new after each signal, for the tests of handles that follow a
workflow's chain of runs (tests/sdk_io/test_run_chains.py)."""

from __future__ import annotations

import asyncio

from chronicle import workflow


@workflow
async def hops(count: int = 0) -> str:
    """Run ``count`` of a chain: signal ``hop`` continues it as new (as run ``count + 1``),
    signal ``finish`` completes it; query ``count`` answers ``count``, update ``add`` adds to
    a running total and answers ``count * 100 + total``; a cancellation completes it."""
    hopped: list[bool] = []
    finished: list[bool] = []
    added = [0]

    def add(amount: int) -> int:
        added[0] += amount
        return count * 100 + added[0]

    workflow.on_signal("hop", lambda: hopped.append(True))
    workflow.on_signal("finish", lambda: finished.append(True))
    workflow.on_query("count", lambda: count)
    workflow.on_update("add", add)
    try:
        await workflow.wait_condition(lambda: bool(hopped or finished))
    except asyncio.CancelledError:
        return f"cancelled in run {count}"
    if not finished:
        workflow.continue_as_new(count + 1)
    return f"finished in run {count}"


CHAIN_WORKFLOWS = [hops]
