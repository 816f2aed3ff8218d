"""An order workflow with compensations (a saga): charge the card, reserve stock, ship.

If a step fails for good, the steps already done are undone in reverse order: release the stock,
refund the card. Every step is an activity, so a crash of the worker (or the server) at any point
loses nothing: the workflow resumes where its history says it was.

Run it (three terminals):

    chronicle server start-dev
    chronicle worker samples/order.py --task-queue orders
    chronicle workflow start order --id order-1 --task-queue orders --input '"o-1"' --input 1299
    chronicle workflow result order-1          # "shipped o-1: TRACK-O-1"

The compensation path: ask for an item that is out of stock.

    chronicle workflow start order --id order-2 --task-queue orders \\
        --input '"o-2"' --input 1299 --input '"unobtainium"'
    chronicle workflow result order-2          # fails: unobtainium is out of stock; refunded
    chronicle workflow history order-2         # ChargeCard … ReserveStock failed … RefundCard
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from chronicle import ActivityError, ApplicationError, RetryPolicy, activity, workflow

STOCK = {"widget": 100, "gadget": 5, "unobtainium": 0}
"""What the warehouse has (a stand-in for a real inventory service)."""

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
"""Transient failures (a network blip) are retried; a declined card or no stock is not."""


# ---------------------------------------------------------------- activities: the side effects


@activity(start_to_close_timeout=timedelta(seconds=30), retry=RETRY)
async def charge_card(order_id: str, cents: int) -> str:
    """Charge the customer; returns the payment receipt."""
    if cents <= 0:
        raise ApplicationError(
            f"cannot charge {cents} cents", type="InvalidAmount", non_retryable=True
        )
    print(f"[{order_id}] charged {cents / 100:.2f}", flush=True)
    return f"receipt-{order_id}"


@activity(start_to_close_timeout=timedelta(seconds=30), retry=RETRY)
async def refund_card(receipt: str, cents: int) -> None:
    """Compensation of ``charge_card``."""
    print(f"[{receipt}] refunded {cents / 100:.2f}", flush=True)


@activity(start_to_close_timeout=timedelta(seconds=30), retry=RETRY)
async def reserve_stock(order_id: str, item: str) -> str:
    """Reserve one ``item``; fails for good (non-retryable) when it is out of stock."""
    if STOCK.get(item, 0) <= 0:
        raise ApplicationError(f"{item} is out of stock", type="OutOfStock", non_retryable=True)
    print(f"[{order_id}] reserved one {item}", flush=True)
    return f"reservation-{order_id}-{item}"


@activity(start_to_close_timeout=timedelta(seconds=30), retry=RETRY)
async def release_stock(reservation: str) -> None:
    """Compensation of ``reserve_stock``."""
    print(f"[{reservation}] released", flush=True)


@activity(start_to_close_timeout=timedelta(seconds=30), retry=RETRY)
async def ship(order_id: str, item: str) -> str:
    """Hand the parcel to the carrier; returns the tracking number."""
    print(f"[{order_id}] shipped {item}", flush=True)
    return f"TRACK-{order_id.upper()}"


# ---------------------------------------------------------------- the workflow: the decisions


@workflow
async def order(order_id: str, cents: int, item: str = "widget") -> str:
    """Charge, reserve, ship; on a failure, undo what was done (newest first) and fail."""
    undo: list[Callable[[], Awaitable[Any]]] = []
    try:
        receipt = await charge_card(order_id, cents)
        undo.append(lambda: refund_card(receipt, cents))

        reservation = await reserve_stock(order_id, item)
        undo.append(lambda: release_stock(reservation))

        tracking = await ship(order_id, item)
        return f"shipped {order_id}: {tracking}"
    except ActivityError as error:
        workflow.logger.warning("order %s failed (%s); compensating", order_id, error.cause)
        for compensate in reversed(undo):
            await compensate()
        reason = error.cause if error.cause is not None else error
        raise ApplicationError(
            f"order {order_id} was not placed: {reason}; {len(undo)} step(s) undone",
            type="OrderFailed",
            non_retryable=True,
        ) from error
