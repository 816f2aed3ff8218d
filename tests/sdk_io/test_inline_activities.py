"""Inline activities with a real worker: results recorded with the workflow-task completion,
the budget, and activities that outlive it, heartbeat or fail (sdk/_inline.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import grpc
import pytest

from chronicle.history.values import RetryPolicy
from chronicle.sdk import activity as activity_api
from chronicle.sdk.activity import activity
from chronicle.sdk.client import Client
from chronicle.sdk.worker import Worker
from chronicle.sdk.workflow import workflow
from tests.sdk_io.helpers import eventually

FAST = RetryPolicy(initial_interval=timedelta(milliseconds=50), maximum_attempts=3)
ONCE = RetryPolicy(maximum_attempts=1)
RUNS: list[tuple[str, int]] = []


@activity
async def inc(x: int) -> int:
    RUNS.append(("inc", x))
    return x + 1


@activity
async def slow_heartbeat(seconds: float) -> str:
    activity_api.heartbeat("started")
    await asyncio.sleep(seconds)
    return activity_api.info().task_token.decode()


@activity
async def fails_once() -> int:
    attempt = activity_api.info().attempt
    if attempt == 1:
        raise RuntimeError("first attempt fails")
    return attempt


COMPLETER: list[Client] = []


@activity
async def handed_off() -> None:
    """Hands its token to a completer that answers at once, then completes asynchronously."""
    token = activity_api.info().task_token
    asyncio.get_running_loop().create_task(COMPLETER[0].complete_activity(token, 42))
    activity_api.raise_complete_async()


@activity
def sync_step(i: int) -> int:
    return i + 1


@workflow
async def chain(n: int) -> int:
    x = 0
    for _ in range(n):
        x = await workflow.execute_activity("sync_step", x, retry=ONCE)
    return x


@workflow
async def three_incs() -> int:
    x = 0
    for _ in range(3):
        x = await inc(x)
    return x


@workflow
async def one(name: str, *args: Any) -> Any:
    return await workflow.execute_activity(name, *args, retry=FAST)


def _pairs(history: list[Any]) -> list[tuple[Any, Any]]:
    """(ActivityScheduled, its ActivityCompleted) events."""
    scheduled = {e.id: e for e in history if e.type == "ActivityScheduled"}
    return [
        (scheduled[e.attributes.scheduled_event_id], e)
        for e in history
        if e.type == "ActivityCompleted"
    ]


async def test_sequential_activities_are_recorded_with_the_completion(client: Client) -> None:
    RUNS.clear()
    async with Worker(client, task_queue="t", workflows=[three_incs], activities=[inc]):
        handle = await client.start(three_incs, id="inline-seq", task_queue="t")
        assert await handle.result() == 3
    assert RUNS == [("inc", 0), ("inc", 1), ("inc", 2)]  # each ran once
    history = await handle.history()
    pairs = _pairs(history)
    assert len(pairs) == 3
    for scheduled, completed in pairs:
        # one transaction: the completion right after the schedule, with the same time
        assert completed.id == scheduled.id + 1
        assert completed.time == scheduled.time
        assert completed.attributes.attempt == 1
    assert sum(e.type == "WorkflowTaskStarted" for e in history) == 4


async def test_a_zero_budget_records_each_result_in_its_own_transition(client: Client) -> None:
    async with Worker(
        client,
        task_queue="t",
        workflows=[three_incs],
        activities=[inc],
        inline_activity_budget=0,
    ):
        handle = await client.start(three_incs, id="inline-off", task_queue="t")
        assert await handle.result() == 3
    pairs = _pairs(await handle.history())
    assert len(pairs) == 3
    assert all(completed.time > scheduled.time for scheduled, completed in pairs)


async def test_an_activity_outliving_the_budget_heartbeats_and_reports_by_itself(
    client: Client,
) -> None:
    async with Worker(
        client,
        task_queue="t",
        workflows=[one],
        activities=[slow_heartbeat],
        inline_activity_budget=timedelta(milliseconds=10),
    ):
        handle = await client.start(one, "slow_heartbeat", 0.5, id="inline-slow", task_queue="t")

        async def recorded_heartbeat() -> Any:
            description = await handle.describe()
            pending = description.pending_activities
            return pending[0] if pending and pending[0].heartbeat_details else None

        pending = await eventually(recorded_heartbeat, interval=0.02)
        assert pending.heartbeat_details == ("started",)
        token = await handle.result()
    assert '"aid":"1"' in token  # the worker-minted token naming the activity by id
    [(scheduled, completed)] = _pairs(await handle.history())
    assert completed.time > scheduled.time


async def test_an_inline_activity_that_fails_is_retried_by_its_policy(client: Client) -> None:
    async with Worker(client, task_queue="t", workflows=[one], activities=[fails_once]):
        handle = await client.start(one, "fails_once", id="inline-fail", task_queue="t")
        assert await handle.result() == 2
    [(_, completed)] = _pairs(await handle.history())
    assert completed.attributes.attempt == 2


def test_a_negative_budget_is_refused(client: Client) -> None:
    with pytest.raises(ValueError, match="inline_activity_budget"):
        Worker(client, task_queue="t", workflows=[one], inline_activity_budget=-1)


async def test_an_inline_activity_completed_asynchronously_at_once(client: Client) -> None:
    COMPLETER[:] = [client]
    async with Worker(client, task_queue="t", workflows=[one], activities=[handed_off]):
        handle = await client.start(one, "handed_off", id="inline-async", task_queue="t")
        assert await asyncio.wait_for(handle.result(), 10) == 42


async def test_shutdown_in_the_middle_of_a_chain_fails_no_activity(client: Client) -> None:
    """Draining workers run nothing inline or eagerly any more: the chain's next activities are
    queued for other workers, none fails on a closed thread pool."""
    worker = Worker(client, task_queue="t", workflows=[chain], activities=[sync_step])
    async with worker:
        handle = await client.start(chain, 100_000, id="inline-drain", task_queue="t")

        async def some_steps() -> Any:
            history = await handle.history()
            return True if sum(e.type == "ActivityCompleted" for e in history) >= 20 else None

        await eventually(some_steps, interval=0.02)
    history = await handle.history()
    assert not [e for e in history if e.type in ("ActivityFailed", "WorkflowFailed")]
    await handle.terminate(reason="test over")


@activity
async def naps(seconds: float) -> str:
    RUNS.append(("naps", 0))
    await asyncio.sleep(seconds)
    return "rested"


@workflow
async def naps_once(seconds: float) -> str:
    return await workflow.execute_activity(
        "naps", seconds, retry=ONCE, start_to_close_timeout=timedelta(seconds=3)
    )


async def test_a_refusal_after_a_lost_answer_keeps_the_running_inline_activity(
    client: Client,
) -> None:
    """The completion recording an inline activity as started is committed, but its answer is
    lost (the stream breaks) and the retried call is refused as a duplicate (NOT_FOUND). The
    refusal is not definite: the activity goes on and reports its result, once, rather than
    being dropped and timing out (which, with one attempt allowed, would fail the workflow)."""
    RUNS.clear()
    stream = client.connection._stream
    assert stream is not None
    real_call = stream.call
    broken: list[str] = []

    async def breaks_once(method: str, request: Any, timeout: float | None) -> Any:
        response = await real_call(method, request, timeout)
        if method == "CompleteWorkflowTask" and request.inline_started_activity_ids and not broken:
            broken.append(method)
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                "the call stream broke",
            )
        return response

    stream.call = breaks_once  # type: ignore[method-assign]
    async with Worker(
        client,
        task_queue="t",
        workflows=[naps_once],
        activities=[naps],
        inline_activity_budget=timedelta(milliseconds=10),
    ):
        handle = await client.start(naps_once, 0.3, id="inline-lost-answer", task_queue="t")
        assert await asyncio.wait_for(handle.result(), 20) == "rested"
    assert broken
    assert RUNS == [("naps", 0)]
    types = [e.type for e in await handle.history()]
    assert "ActivityTimedOut" not in types
