"""The activity half of ``Worker`` against the real server, observed through describe and the
history."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from chronicle.history.payloads import from_payload
from chronicle.history.values import RetryPolicy
from chronicle.sdk import activity as activity_api
from chronicle.sdk.activity import activity
from chronicle.sdk.client import Client, PendingActivity, WorkflowHandle
from chronicle.sdk.errors import ActivityError, ApplicationError, WorkflowFailed
from chronicle.sdk.worker import Worker
from chronicle.sdk.workflow import workflow
from tests.sdk_io.helpers import eventually, free_port, of_type, start_server

FAST_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=3)

PROGRESS: dict[str, int] = {}
"""Last step each ``crunch`` reached (keyed by workflow id)."""

STARTED: list[str] = []
"""Workflow ids whose ``slow`` activity began."""

GATES: dict[str, asyncio.Event] = {}
"""Per workflow id: released by the test to let attempt 1 of ``late`` return."""

RETURNED: dict[str, list[int]] = {}
"""Per workflow id: the attempts of ``late`` that returned."""


@dataclass
class Item:
    sku: str
    qty: int


@activity
async def reserve(item: Item, order_id: str) -> Item:
    assert activity_api.info().activity_type == "reserve"
    assert isinstance(item, Item), f"not decoded by its type hint: {item!r}"
    return Item(item.sku + "-" + order_id, item.qty * 2)


@activity
async def refuse(order_id: str) -> None:
    raise ApplicationError(f"no {order_id}", type="OutOfStock", non_retryable=True)


@activity
def crunch(n: int) -> int:
    workflow_id = activity_api.info().workflow_id
    for step in range(n):
        PROGRESS[workflow_id] = step
        activity_api.heartbeat(step)
        time.sleep(0.02)
    return n


@activity
async def slow(seconds: float) -> str:
    STARTED.append(activity_api.info().workflow_id)
    await asyncio.sleep(seconds)
    return "done"


@activity(start_to_close_timeout=timedelta(milliseconds=500), retry=FAST_RETRY)
async def late() -> str:
    info = activity_api.info()
    if info.attempt == 1:
        await GATES[info.workflow_id].wait()
    RETURNED.setdefault(info.workflow_id, []).append(info.attempt)
    return f"attempt {info.attempt}"


@workflow
async def reserves() -> Item:
    return await reserve(Item("sku", 2), "o-1")


@workflow
async def calls(activity_type: str, *args: Any) -> Any:
    return await workflow.execute_activity(activity_type, *args, retry=FAST_RETRY)


@workflow
async def refuses() -> None:
    await refuse("o-9")


@workflow
async def crunches(n: int) -> str:
    try:
        await workflow.execute_activity(
            crunch,
            n,
            heartbeat_timeout=timedelta(seconds=1),
            cancellation_type="wait_cancellation_completed",
        )
    except asyncio.CancelledError:
        return "cancelled after ack"
    return "finished"


@workflow
async def waits_slowly(seconds: float) -> str:
    return await slow(seconds)


@workflow
async def waits_late() -> str:
    return await late()


async def pending(handle: WorkflowHandle[Any]) -> PendingActivity | None:
    """The run's one pending activity, if any."""
    activities = (await handle.describe()).pending_activities
    return activities[0] if activities else None


async def test_an_activity_gets_arguments_decoded_by_its_type_hints(client: Client) -> None:
    async with Worker(client, task_queue="acts", workflows=[reserves], activities=[reserve]) as w:
        handle = await client.start(reserves, id="reserve-1", task_queue="acts")
        assert await asyncio.wait_for(handle.result(), 15) == Item("sku-o-1", 4)
    [done] = of_type(await handle.history(), "ActivityCompleted")
    assert from_payload(done.result, Item) == Item("sku-o-1", 4)
    assert done.identity == w.identity
    assert w.identity.count(":") == 2  # host:pid:uuid


async def test_an_unknown_activity_type_fails_retryably_naming_the_known_ones(
    client: Client,
) -> None:
    async with Worker(client, task_queue="acts", workflows=[calls], activities=[reserve, refuse]):
        handle = await client.start(calls, "nope", id="unknown-act", task_queue="acts")

        async def failed() -> PendingActivity | None:
            activity = await pending(handle)
            return activity if activity and activity.last_failure else None

        activity = await eventually(failed)
    assert activity.last_failure is not None
    assert "'nope'" in activity.last_failure.message
    assert "refuse, reserve" in activity.last_failure.message
    assert not activity.last_failure.non_retryable
    assert activity.state != "failed"  # retried, not recorded as failed
    assert of_type(await handle.history(), "ActivityFailed") == []
    await handle.terminate("test over")


async def test_an_application_error_becomes_the_activitys_failure(client: Client) -> None:
    async with Worker(client, task_queue="acts", workflows=[refuses], activities=[refuse]):
        handle = await client.start(refuses, id="refuse-1", task_queue="acts")
        with pytest.raises(WorkflowFailed) as info:
            await asyncio.wait_for(handle.result(), 15)
    [failed] = of_type(await handle.history(), "ActivityFailed")
    assert failed.failure.type == "OutOfStock"
    assert failed.failure.non_retryable
    assert failed.failure.message == "no o-9"
    assert failed.attempt == 1  # non-retryable: no second attempt
    cause = info.value.cause
    assert isinstance(cause, ActivityError)
    assert isinstance(cause.__cause__, ApplicationError)
    assert cause.__cause__.type == "OutOfStock"


async def test_heartbeats_are_throttled_and_cancellation_reaches_a_sync_activity(
    client: Client,
) -> None:
    """heartbeat_timeout 1 s: at most one heartbeat per 0.8 s although ``crunch`` calls
    heartbeat() every 20 ms; the server sees steps far apart."""
    async with Worker(client, task_queue="acts", workflows=[crunches], activities=[crunch]):
        handle = await client.start(crunches, 500, id="crunch-1", task_queue="acts")
        seen: list[int] = []

        async def three_heartbeats() -> bool | None:
            activity = await pending(handle)
            if activity is not None and activity.heartbeat_details:
                step = activity.heartbeat_details[0]
                if not seen or seen[-1] != step:
                    seen.append(step)
            return True if len(seen) >= 3 else None

        await eventually(three_heartbeats, interval=0.02)
        assert seen[0] == 0  # the first heartbeat goes out at once
        gaps = [b - a for a, b in itertools.pairwise(seen)]
        assert min(gaps) >= 10, seen  # unthrottled, consecutive reads would be steps apart
        await handle.cancel()
        assert await asyncio.wait_for(handle.result(), 15) == "cancelled after ack"
    assert PROGRESS["crunch-1"] < 499  # stopped at a heartbeat, did not run to the end
    types = [e.type for e in await handle.history()]
    assert "ActivityCancelRequested" in types
    assert "ActivityCanceled" in types


async def test_a_stale_completion_is_ignored_and_the_worker_goes_on(client: Client) -> None:
    """Attempt 1 times out on the server (start-to-close 0.5 s) and returns only afterwards: its
    completion is answered NOT_FOUND. With one activity slot, attempt 2 can only run once the
    worker got past that answer."""
    GATES["late-1"] = asyncio.Event()
    async with Worker(
        client,
        task_queue="acts",
        workflows=[waits_late],
        activities=[late],
        max_concurrent_activities=1,
    ):
        handle = await client.start(waits_late, id="late-1", task_queue="acts")

        async def retried() -> bool | None:
            activity = await pending(handle)
            return True if activity is not None and activity.attempt >= 2 else None

        await eventually(retried)
        GATES["late-1"].set()
        assert await asyncio.wait_for(handle.result(), 15) == "attempt 2"
    assert RETURNED["late-1"] == [1, 2]
    [done] = of_type(await handle.history(), "ActivityCompleted")
    assert done.attempt == 2
    assert from_payload(done.result) == "attempt 2"


async def test_shutdown_lets_a_running_activity_finish(client: Client) -> None:
    async with Worker(
        client,
        task_queue="acts",
        workflows=[waits_slowly],
        activities=[slow],
        graceful_shutdown_timeout=5,
    ):
        handle = await client.start(waits_slowly, 0.5, id="graceful-1", task_queue="acts")

        async def begun() -> bool | None:
            return True if "graceful-1" in STARTED else None

        await eventually(begun)
    # The worker reported the result before its shutdown finished.
    [done] = of_type(await handle.history(), "ActivityCompleted")
    assert from_payload(done.result) == "done"


async def test_shutdown_past_the_grace_period_fails_the_attempt_retryably(
    client: Client,
) -> None:
    async with Worker(
        client,
        task_queue="acts",
        workflows=[waits_slowly],
        activities=[slow],
        graceful_shutdown_timeout=0.2,
    ):
        handle = await client.start(waits_slowly, 30, id="graceful-2", task_queue="acts")

        async def begun() -> bool | None:
            return True if "graceful-2" in STARTED else None

        await eventually(begun)
    activity = await pending(handle)
    assert activity is not None
    assert activity.last_failure is not None
    assert activity.last_failure.type == "WorkerShutdown"
    assert activity.attempt == 2  # to be run again
    await handle.terminate("test over")


async def test_a_worker_survives_a_server_restart(database_url: str) -> None:
    port = free_port()
    server = await start_server(database_url, port)
    client = await Client.connect(f"127.0.0.1:{port}", retry_timeout=30.0)
    try:
        async with Worker(client, task_queue="acts", workflows=[waits_slowly], activities=[slow]):
            before = await client.start(waits_slowly, 0.0, id="restart-1", task_queue="acts")
            assert await asyncio.wait_for(before.result(), 15) == "done"
            await server.stop(grace=0)
            server = await start_server(database_url, port)
            after = await client.start(waits_slowly, 0.0, id="restart-2", task_queue="acts")
            assert await asyncio.wait_for(after.result(), 30) == "done"
    finally:
        await client.close()
        await server.stop(grace=0)


def test_a_worker_rejects_undecorated_functions() -> None:
    async def plain() -> None: ...

    with pytest.raises(TypeError, match="not decorated with @activity"):
        Worker(Client.__new__(Client), task_queue="q", activities=[plain])
