"""Decorators, ActivityFunction outside workflows, in-activity context, payloads, errors."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest

from chronicle.history import commands as cmd
from chronicle.history.payloads import (
    PayloadEncodingError,
    from_payload,
    from_payloads,
    to_payload,
    to_payloads,
)
from chronicle.history.values import Failure, FailureKind, RetryPolicy, TimeoutType
from chronicle.sdk._definitions import (
    ActivityOptions,
    activity_definition,
    workflow_definition,
)
from chronicle.sdk._info import ActivityInfo
from chronicle.sdk.activity import (
    ActivityContext,
    ActivityFunction,
    activity,
    reset_activity_context,
    set_activity_context,
)
from chronicle.sdk.errors import (
    ActivityError,
    ApplicationError,
    CompleteAsyncError,
    FailureError,
    TimeoutFailure,
    exception_to_failure,
    failure_to_exception,
)
from chronicle.sdk.workflow import workflow
from tests.sdk.sdk_histories import Sim


@dataclass
class Item:
    sku: str
    qty: int
    at: datetime


class Order(pydantic.BaseModel):
    id: str
    items: list[Item]


@activity(
    name="charge-card",
    start_to_close_timeout=timedelta(seconds=5),
    retry=RetryPolicy(maximum_attempts=3),
)
async def charge(order: Order, cents: int = 0) -> str:
    return f"{order.id}:{cents}"


@activity
def resize(path: str) -> str:
    return path.upper()


def test_activity_function_outside_workflow_runs_plainly() -> None:
    order = Order(id="o", items=[])
    assert asyncio.run(charge(order, 3)) == "o:3"
    assert resize("a") == "A"
    assert isinstance(charge, ActivityFunction)
    assert charge.name == "charge-card"
    assert resize.name == "resize"
    assert charge.__name__ == "charge"
    definition = activity_definition(charge)
    assert definition.is_async
    assert not activity_definition(resize).is_async
    assert definition.options.start_to_close_timeout == timedelta(seconds=5)
    assert definition.arg_hints == (Order, int)
    assert definition.return_hint is str


def test_with_options_merges() -> None:
    fast = charge.with_options(task_queue="payments", start_to_close_timeout=timedelta(seconds=1))
    options = fast.definition.options
    assert options.task_queue == "payments"
    assert options.start_to_close_timeout == timedelta(seconds=1)
    assert options.retry == RetryPolicy(maximum_attempts=3)
    assert charge.definition.options.task_queue is None
    merged = ActivityOptions(task_queue="a").merged(ActivityOptions(heartbeat_timeout=timedelta(1)))
    assert merged == ActivityOptions(task_queue="a", heartbeat_timeout=timedelta(1))
    with pytest.raises(ValueError, match="cancellation_type"):
        ActivityOptions(cancellation_type="nope")


@workflow
async def uses_options(order: Order) -> Any:
    first = await charge.with_options(task_queue="payments")(order, cents=5)
    second = await workflow.execute_activity(
        "remote", 1, task_queue="elsewhere", schedule_to_close_timeout=timedelta(minutes=1)
    )
    third = await workflow.execute_activity(resize, "p", heartbeat_timeout=timedelta(seconds=2))
    return [first, second, third]


def test_activity_options_reach_the_commands() -> None:
    order = Order(id="o-1", items=[Item(sku="s", qty=2, at=datetime(2024, 1, 1, tzinfo=UTC))])
    sim = Sim(uses_options, order)
    [first] = sim.step()
    assert isinstance(first, cmd.ScheduleActivity)
    assert (first.activity_type, first.task_queue) == ("charge-card", "payments")
    assert first.retry_policy == RetryPolicy(maximum_attempts=3)
    assert from_payload(first.input[0], Order) == order
    assert from_payload(first.input[1]) == 5
    sim.activity_completed(1, "ok")
    [second] = sim.step()
    assert isinstance(second, cmd.ScheduleActivity)
    assert (second.activity_type, second.task_queue) == ("remote", "elsewhere")
    assert second.start_to_close_timeout is None
    assert second.schedule_to_close_timeout == timedelta(minutes=1)
    sim.activity_completed(2, {"any": "json"})
    [third] = sim.step()
    assert isinstance(third, cmd.ScheduleActivity)
    assert third.activity_type == "resize"
    assert third.heartbeat_timeout == timedelta(seconds=2)


def test_workflow_decorator_returns_the_function() -> None:
    async def plain(x: int) -> int:
        return x

    decorated = workflow(plain)
    assert decorated is plain
    assert workflow_definition(plain).name == "plain"
    assert workflow_definition(workflow(name="other")(plain)).name == "other"
    with pytest.raises(TypeError, match="is not decorated with @workflow"):
        workflow_definition(len)
    with pytest.raises(TypeError, match="is not decorated with @activity"):
        activity_definition(plain)
    with pytest.raises(TypeError, match="async"):
        workflow(lambda: None)


def test_workflow_api_outside_workflow_raises() -> None:
    with pytest.raises(RuntimeError, match="not in workflow code"):
        workflow.now()
    with pytest.raises(RuntimeError, match="not in workflow code"):
        asyncio.run(workflow.sleep(1))


def test_in_activity_context() -> None:
    beats: list[tuple[Any, ...]] = []
    cancelled = threading.Event()
    info = ActivityInfo(
        activity_id="1",
        activity_type="resize",
        attempt=2,
        workflow_id="w",
        run_id="r",
        workflow_type="t",
        namespace="default",
        task_queue="q",
        task_token=b"tok",
        heartbeat_details=(7,),
    )
    token = set_activity_context(
        ActivityContext(info=info, heartbeat=beats.append, cancelled=cancelled)
    )
    try:
        assert activity.info().attempt == 2
        activity.heartbeat(1, "x")
        assert beats == [(1, "x")]
        assert not activity.is_cancelled()
        cancelled.set()
        assert activity.is_cancelled()
        with pytest.raises(asyncio.CancelledError):
            activity.heartbeat()
        with pytest.raises(CompleteAsyncError):
            activity.raise_complete_async()
    finally:
        reset_activity_context(token)
    with pytest.raises(RuntimeError, match="not in an activity"):
        activity.info()


# ---------------------------------------------------------------- payloads


def test_payload_round_trips() -> None:
    item = Item(sku="a", qty=1, at=datetime(2024, 5, 1, 12, tzinfo=UTC))
    order = Order(id="o", items=[item])
    assert from_payload(to_payload(item), Item) == item
    assert from_payload(to_payload(order), Order) == order
    assert from_payload(to_payload(order)) == {
        "id": "o",
        "items": [{"sku": "a", "qty": 1, "at": "2024-05-01T12:00:00Z"}],
    }
    assert from_payload(to_payload(None)) is None
    assert from_payloads(to_payloads([item, 3]), [Item]) == [item, 3]
    assert from_payload(to_payload([item]), list[Item]) == [item]
    assert to_payload({"a": (1, 2)}).data == b'{"a":[1,2]}'


def test_payload_errors_name_the_problem() -> None:
    with pytest.raises(PayloadEncodingError, match="object"):
        to_payload(object())
    with pytest.raises(PayloadEncodingError, match="value 2 of 2"):
        to_payloads([1, object()])
    with pytest.raises(PayloadEncodingError, match="Item"):
        from_payload(to_payload({"sku": "a"}), Item)
    with pytest.raises(PayloadEncodingError, match="encoding"):
        from_payload(to_payload(1).__class__(encoding="binary/zstd", data=b""), int)


def test_unencodable_activity_argument_names_the_argument() -> None:
    @workflow
    async def bad() -> None:
        await resize(object())  # type: ignore[arg-type]

    sim = Sim(bad)
    with pytest.raises(Exception, match="argument 1 of resize"):
        sim.task()


# ---------------------------------------------------------------- errors


def test_application_error_round_trip() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise ApplicationError(
                "outer", 1, {"a": 2}, type="Declined", non_retryable=True
            ) from inner
    except ApplicationError as err:
        failure = exception_to_failure(err)
    assert (failure.type, failure.message, failure.non_retryable) == ("Declined", "outer", True)
    assert failure.cause is not None
    assert failure.cause.type == "KeyError"
    assert "raise ApplicationError" in failure.stack
    rebuilt = failure_to_exception(failure)
    assert isinstance(rebuilt, ApplicationError)
    assert rebuilt.details == (1, {"a": 2})
    assert rebuilt.type == "Declined"
    assert isinstance(rebuilt.__cause__, ApplicationError)
    assert exception_to_failure(rebuilt) == failure


def test_application_error_takes_details_by_keyword_as_api_md_writes_it() -> None:
    """``ApplicationError(message, non_retryable=False, details=None)`` (API.md): the keyword
    adds one detail, which survives the round trip through the recorded failure."""
    err = ApplicationError("declined", non_retryable=True, details={"code": 51})
    assert (err.message, err.non_retryable, err.details) == ("declined", True, ({"code": 51},))
    rebuilt = failure_to_exception(exception_to_failure(err))
    assert isinstance(rebuilt, ApplicationError)
    assert (rebuilt.non_retryable, rebuilt.details) == (True, ({"code": 51},))
    assert ApplicationError("plain").details == ()
    assert ApplicationError("both", 1, details=2).details == (1, 2)


def test_activity_timeout_failure_rebuilds() -> None:
    failure = Failure(
        message="activity failed",
        type="ActivityError",
        kind=FailureKind.ACTIVITY,
        cause=Failure(
            message="start_to_close",
            kind=FailureKind.TIMEOUT,
            timeout_type=TimeoutType.START_TO_CLOSE,
        ),
    )
    error = failure_to_exception(failure)
    assert isinstance(error, ActivityError)
    assert isinstance(error, FailureError)
    assert isinstance(error.cause, TimeoutFailure)
    assert error.cause.timeout_type is TimeoutType.START_TO_CLOSE


def test_plain_exception_to_failure() -> None:
    failure = exception_to_failure(ValueError("bad"))
    assert (failure.type, failure.message, failure.kind) == (
        "ValueError",
        "bad",
        FailureKind.APPLICATION,
    )
    assert isinstance(failure_to_exception(failure), ApplicationError)
