"""A workflow with a query and a validated update, for the tests that run two server replicas.

Its query handler stalls like ``query_workflows.watched``'s when the worker runs with
``query_workflows.STALL_ENV`` set (so a test can kill the worker while it holds the query).
"""

from __future__ import annotations

from chronicle import ApplicationError, workflow
from tests.e2e.query_workflows import _stall_if_asked


@workflow
async def tally() -> int:
    """Adds what update ``add`` brings (its validator refuses numbers below 1) until signal
    ``finish``; query ``total`` answers the sum so far."""
    total = [0]
    finished = [False]

    def positive(amount: int) -> None:
        if amount < 1:
            message = f"cannot add {amount}: only positive amounts"
            raise ApplicationError(message, type="NotPositive")

    def add(amount: int) -> int:
        total[0] += amount
        return total[0]

    def read_total() -> int:
        _stall_if_asked()
        return total[0]

    def finish() -> None:
        finished[0] = True

    workflow.on_update("add", add, validator=positive)
    workflow.on_query("total", read_total)
    workflow.on_signal("finish", finish)
    await workflow.wait_condition(lambda: finished[0])
    return total[0]
