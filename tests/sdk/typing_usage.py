"""Checked by mypy in test_typing.py: the decorators keep user signatures and result types."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, assert_type

from chronicle.history.values import RetryPolicy
from chronicle.sdk.activity import ActivityFunction, activity
from chronicle.sdk.workflow import workflow


@activity(start_to_close_timeout=timedelta(seconds=30), retry=RetryPolicy(maximum_attempts=5))
async def charge_card(order_id: str, cents: int) -> str:
    return order_id


@activity
def resize(path: str) -> int:
    return len(path)


@workflow
async def order(order_id: str, cents: int) -> str:
    receipt = await charge_card(order_id, cents)
    assert_type(receipt, str)
    size = await workflow.execute_activity(resize, "x", task_queue="images")
    assert_type(size, int)
    assert_type(await workflow.execute_activity(charge_card, "o", 1), str)
    assert_type(await workflow.execute_activity("by-name", 1), Any)
    await workflow.sleep(timedelta(hours=1))
    return receipt


@workflow(name="renamed")
async def renamed(x: int) -> int:
    return x


as_workflow: Callable[[str, int], Coroutine[Any, Any, str]] = order
as_activity: Callable[[str, int], Coroutine[Any, Any, str]] = charge_card
with_options: ActivityFunction[..., Coroutine[Any, Any, str]] = charge_card.with_options(
    task_queue="p"
)
assert_type(resize("a"), int)
