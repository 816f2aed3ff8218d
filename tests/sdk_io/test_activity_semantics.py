"""Issue 4 against a real server and real workers: timeouts, retries, cancellation, async
completion, local activities, routing and rate limits."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from datetime import timedelta
from typing import Any

import pytest

from chronicle.history.values import FailureKind, RetryPolicy, TimeoutType
from chronicle.sdk import activity as activity_api
from chronicle.sdk.activity import activity
from chronicle.sdk.client import Client
from chronicle.sdk.errors import (
    ActivityError,
    ActivityNotFound,
    ApplicationError,
    TimeoutFailure,
    WorkflowFailed,
)
from chronicle.sdk.replay import replay
from chronicle.sdk.worker import Worker
from chronicle.sdk.workflow import workflow
from tests.sdk_io.helpers import eventually, of_type

FAST = RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=3)
ONCE = RetryPolicy(maximum_attempts=1)

ATTEMPTS: dict[str, list[tuple[int, float]]] = {}
"""Per workflow id: (attempt, monotonic start time) of each attempt of an activity."""

TOKENS: dict[str, bytes] = {}
"""Per workflow id: the task token of an asynchronously completed activity."""

OBSERVED: dict[str, str] = {}
"""Per workflow id: how a running activity noticed its cancellation."""


def _record(info: Any) -> None:
    ATTEMPTS.setdefault(info.workflow_id, []).append((info.attempt, time.monotonic()))


@activity
async def silent(seconds: float) -> str:
    """Never heartbeats."""
    _record(activity_api.info())
    await asyncio.sleep(seconds)
    return "done"


class Flaky(Exception):
    pass


class Fatal(Exception):
    pass


@activity
async def flaky(fail_times: int, error: str) -> int:
    info = activity_api.info()
    _record(info)
    if info.attempt <= fail_times:
        raise (Fatal if error == "Fatal" else Flaky)(f"attempt {info.attempt}")
    return info.attempt


@activity
async def async_loop() -> str:
    try:
        while True:
            activity_api.heartbeat("tick")
            await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        OBSERVED[activity_api.info().workflow_id] = "CancelledError"
        raise


@activity
def sync_loop() -> str:
    workflow_id = activity_api.info().workflow_id
    while not activity_api.is_cancelled():
        try:
            activity_api.heartbeat("tick")
        except asyncio.CancelledError:
            break
        time.sleep(0.05)
    OBSERVED[workflow_id] = "is_cancelled"
    raise asyncio.CancelledError


@activity
async def waits_for_human(order: str) -> str:
    TOKENS[activity_api.info().workflow_id] = activity_api.info().task_token
    activity_api.raise_complete_async()


@activity
async def where() -> str:
    return activity_api.info().task_queue


@workflow
async def runs(name: str, *args: Any) -> Any:
    return await workflow.execute_activity(name, *args, retry=FAST)


@workflow
async def unstarted() -> str:
    await workflow.execute_activity(
        "silent",
        1.0,
        task_queue="nobody",
        schedule_to_start_timeout=timedelta(milliseconds=300),
        retry=RetryPolicy(initial_interval=timedelta(milliseconds=50), maximum_attempts=2),
    )
    return "completed"


@workflow
async def timeout_kind(name: str, seconds: float, options: dict[str, float]) -> str:
    kwargs: dict[str, Any] = {k: timedelta(seconds=v) for k, v in options.items()}
    try:
        await workflow.execute_activity(
            name,
            seconds,
            retry=RetryPolicy(initial_interval=timedelta(milliseconds=50), maximum_attempts=2),
            **kwargs,
        )
    except ActivityError as exc:
        cause = exc.cause
        assert isinstance(cause, TimeoutFailure), cause
        return f"{cause.timeout_type}:{exc.attempt}"
    return "completed"


@pytest.mark.parametrize(
    ("activity_name", "options", "kind", "attempts"),
    [
        ("silent", {"start_to_close_timeout": 0.3}, "start_to_close", 2),
        ("silent", {"heartbeat_timeout": 0.3, "start_to_close_timeout": 30}, "heartbeat", 2),
        ("silent", {"schedule_to_close_timeout": 0.5}, "schedule_to_close", 1),
    ],
)
async def test_each_running_timeout_fires_is_retried_and_names_its_kind(
    client: Client, activity_name: str, options: dict[str, float], kind: str, attempts: int
) -> None:
    """Each kind fires on a server timer; all but schedule_to_close are retried (2 attempts)."""
    wid = f"timeout-{kind}"
    async with Worker(
        client,
        task_queue="t",
        workflows=[timeout_kind],
        activities=[silent],
        graceful_shutdown_timeout=0.1,
    ):
        handle = await client.start(
            timeout_kind, activity_name, 30.0, options, id=wid, task_queue="t"
        )
        result = await asyncio.wait_for(handle.result(), 20)
    assert result.startswith(kind), result
    [timed_out] = of_type(await handle.history(), "ActivityTimedOut")
    assert timed_out.timeout_type is TimeoutType(kind)
    assert timed_out.failure.kind is FailureKind.TIMEOUT
    assert [a for a, _ in ATTEMPTS[wid]] == list(range(1, attempts + 1))


async def test_schedule_to_start_fires_when_no_worker_polls_and_is_retried(
    client: Client,
) -> None:
    """No worker serves queue "nobody": schedule_to_start fires for each of the 2 attempts."""
    async with Worker(client, task_queue="t", workflows=[unstarted]):
        handle = await client.start(unstarted, id="s2s", task_queue="t")
        with pytest.raises(WorkflowFailed) as failed:
            await asyncio.wait_for(handle.result(), 20)
    error = failed.value.cause
    assert isinstance(error, ActivityError)
    assert isinstance(error.cause, TimeoutFailure)
    assert error.cause.timeout_type is TimeoutType.SCHEDULE_TO_START
    [timed_out] = of_type(await handle.history(), "ActivityTimedOut")
    assert timed_out.timeout_type is TimeoutType.SCHEDULE_TO_START
    assert timed_out.attempt == 2


@workflow
async def backs_off(fail_times: int, error: str) -> int:
    return await workflow.execute_activity(
        flaky,
        fail_times,
        error,
        retry=RetryPolicy(
            initial_interval=timedelta(milliseconds=200),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(milliseconds=300),
            maximum_attempts=5,
            non_retryable_error_types=("Fatal",),
        ),
    )


async def test_retry_backoff_intervals_grow_and_are_capped_without_events(client: Client) -> None:
    """Attempts 2, 3, 4 start no earlier than 0.2 s, 0.3 s (0.4 capped), 0.3 s after the
    previous one failed; the history holds one schedule and one completion, and describe showed
    the attempt and last failure meanwhile."""
    async with Worker(client, task_queue="t", workflows=[backs_off], activities=[flaky]):
        handle = await client.start(backs_off, 3, "Flaky", id="backoff", task_queue="t")

        async def failed_twice() -> Any:
            desc = await handle.describe()
            for pending in desc.pending_activities:
                if pending.attempt >= 3 and pending.last_failure is not None:
                    return pending
            return None

        seen = await eventually(failed_twice, interval=0.01)
        assert seen.last_failure.type == "Flaky"
        assert await asyncio.wait_for(handle.result(), 20) == 4
    starts = [t for _, t in ATTEMPTS["backoff"]]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    for gap, minimum in zip(gaps, [0.2, 0.3, 0.3], strict=True):
        assert gap >= minimum * 0.9, gaps
    types = [e.type for e in await handle.history()]
    assert types.count("ActivityScheduled") == 1
    assert types.count("ActivityCompleted") == 1
    assert "ActivityFailed" not in types


async def test_a_non_retryable_error_type_fails_at_once(client: Client) -> None:
    async with Worker(client, task_queue="t", workflows=[backs_off], activities=[flaky]):
        handle = await client.start(backs_off, 3, "Fatal", id="fatal", task_queue="t")
        with pytest.raises(WorkflowFailed) as failed:
            await asyncio.wait_for(handle.result(), 20)
    error = failed.value.cause
    assert isinstance(error, ActivityError)
    assert isinstance(error.cause, ApplicationError)
    assert error.cause.type == "Fatal"
    [final] = of_type(await handle.history(), "ActivityFailed")
    assert final.attempt == 1
    assert [a for a, _ in ATTEMPTS["fatal"]] == [1]


@workflow
async def cancels(name: str, cancellation_type: str) -> str:
    task = asyncio.ensure_future(
        workflow.execute_activity(
            name,
            heartbeat_timeout=timedelta(seconds=2),
            cancellation_type=cancellation_type,
        )
    )
    await workflow.sleep(timedelta(milliseconds=300))
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    return "after cancel"


@pytest.mark.parametrize(
    ("name", "seen"), [("async_loop", "CancelledError"), ("sync_loop", "is_cancelled")]
)
async def test_cancellation_reaches_a_running_activity_and_the_workflow_waits(
    client: Client, name: str, seen: str
) -> None:
    """wait_cancellation_completed: the workflow resumes only after the activity acknowledged,
    so ActivityCanceled is recorded before the workflow completes."""
    wid = f"cancel-{name}"
    async with Worker(
        client, task_queue="t", workflows=[cancels], activities=[async_loop, sync_loop]
    ):
        handle = await client.start(
            cancels, name, "wait_cancellation_completed", id=wid, task_queue="t"
        )
        assert await asyncio.wait_for(handle.result(), 20) == "after cancel"
    assert OBSERVED[wid] == seen
    types = [e.type for e in await handle.history()]
    assert types.index("ActivityCancelRequested") < types.index("ActivityCanceled")
    assert types.index("ActivityCanceled") < types.index("WorkflowCompleted")


@pytest.mark.parametrize("cancellation_type", ["try_cancel", "abandon"])
async def test_try_cancel_and_abandon_do_not_wait_for_the_activity(
    client: Client, cancellation_type: str
) -> None:
    """try_cancel asks the activity to stop but completes without its acknowledgement; abandon
    does not even ask (the activity goes on until the run closes)."""
    wid = f"no-wait-{cancellation_type}"
    async with Worker(
        client,
        task_queue="t",
        workflows=[cancels],
        activities=[async_loop],
        graceful_shutdown_timeout=0.1,
    ):
        handle = await client.start(
            cancels, "async_loop", cancellation_type, id=wid, task_queue="t"
        )
        assert await asyncio.wait_for(handle.result(), 20) == "after cancel"
    types = [e.type for e in await handle.history()]
    if cancellation_type == "abandon":
        assert "ActivityCancelRequested" not in types
    else:
        assert "ActivityCancelRequested" in types
        completed = types.index("WorkflowCompleted")
        assert "ActivityCanceled" not in types[:completed]


@workflow
async def waits_for_approval(order: str) -> str:
    return await workflow.execute_activity(
        waits_for_human, order, start_to_close_timeout=timedelta(seconds=30), retry=FAST
    )


async def test_async_completion_and_bad_tokens_record_nothing(client: Client) -> None:
    async with Worker(
        client, task_queue="t", workflows=[waits_for_approval], activities=[waits_for_human]
    ):
        handle = await client.start(waits_for_approval, "o-1", id="async-1", task_queue="t")
        token = await eventually(lambda: _token("async-1"))
        before = len(await handle.history())
        with pytest.raises(ValueError, match="task_token"):
            await client.complete_activity(b"not a token", "x")
        stale = token.replace(b'"attempt":1', b'"attempt":7')
        with pytest.raises(ActivityNotFound, match="not found"):
            await client.complete_activity(stale, "x")
        unknown = token.replace(b'"wid":"async-1"', b'"wid":"nobody"')
        with pytest.raises(ActivityNotFound):
            await client.heartbeat_activity(unknown, "x")
        assert len(await handle.history()) == before  # nothing recorded
        assert await client.heartbeat_activity(token, {"step": 1}) is False
        pending = (await handle.describe()).pending_activities[0]
        assert pending.heartbeat_details == ({"step": 1},)
        await client.complete_activity(token, "approved")
        assert await asyncio.wait_for(handle.result(), 10) == "approved"
        after = len(await handle.history())
        with pytest.raises(ActivityNotFound):  # already used
            await client.complete_activity(token, "again")
        with pytest.raises(ActivityNotFound):
            await client.fail_activity(token, ApplicationError("late"))
        assert len(await handle.history()) == after


async def _token(workflow_id: str) -> bytes | None:
    return TOKENS.get(workflow_id)


@workflow
async def routed() -> str:
    return await workflow.execute_activity(where, task_queue="elsewhere")


async def test_an_activity_routed_to_another_task_queue_runs_there(client: Client) -> None:
    async with (
        Worker(client, task_queue="t", workflows=[routed]),
        Worker(client, task_queue="elsewhere", activities=[where]),
    ):
        handle = await client.start(routed, id="routed", task_queue="t")
        assert await asyncio.wait_for(handle.result(), 20) == "elsewhere"


STARTS: list[float] = []
RUNNING: list[int] = [0, 0]
"""Currently running, maximum seen."""


@activity
async def counted(i: int) -> int:
    info = activity_api.info()
    assert info.started_time is not None
    STARTS.append(info.started_time.timestamp())
    RUNNING[0] += 1
    RUNNING[1] = max(RUNNING)
    await asyncio.sleep(0.05)
    RUNNING[0] -= 1
    return i


@workflow
async def fans_out(n: int) -> int:
    results = await asyncio.gather(
        *(workflow.execute_activity(counted, i, task_queue="rl") for i in range(n))
    )
    return sum(results)


async def test_rate_limit_spans_workers_and_max_concurrency_holds(client: Client) -> None:
    """Two workers, 5 activities/s for the queue: server start times are >= 0.2 s apart (with
    slack); each worker runs at most one at a time."""
    STARTS.clear()
    async with (
        Worker(client, task_queue="t", workflows=[fans_out]),
        Worker(
            client,
            task_queue="rl",
            activities=[counted],
            max_activities_per_second=5,
            max_concurrent_activities=1,
        ),
        Worker(
            client,
            task_queue="rl",
            activities=[counted],
            max_activities_per_second=5,
            max_concurrent_activities=1,
        ),
    ):
        handle = await client.start(fans_out, 6, id="rate", task_queue="t")
        assert await asyncio.wait_for(handle.result(), 30) == 15
    starts = sorted(STARTS)
    assert len(starts) == 6
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.15, gaps
    assert RUNNING[1] <= 2


@workflow
async def fans_out_here(n: int) -> int:
    """Activities on the workflow's own task queue (where eager dispatch could start them)."""
    return sum(await asyncio.gather(*(workflow.execute_activity(counted, i) for i in range(n))))


async def test_a_worker_without_a_limit_obeys_the_queues_limit(
    client: Client, database_url: str
) -> None:
    """Once a limited worker has set the queue's limit, a worker with none of its own neither
    polls past it nor starts the queue's activities eagerly."""
    import asyncpg

    STARTS.clear()
    async with Worker(client, task_queue="rl2", activities=[counted], max_activities_per_second=5):
        conn = await asyncpg.connect(database_url)
        try:
            await eventually(
                lambda: conn.fetchval(
                    "SELECT 1 FROM task_queue_rate_limits WHERE task_queue = 'rl2'"
                )
            )
        finally:
            await conn.close()
        async with Worker(
            client, task_queue="rl2", workflows=[fans_out_here], activities=[counted]
        ):
            handle = await client.start(fans_out_here, 4, id="rate-eager", task_queue="rl2")
            assert await asyncio.wait_for(handle.result(), 30) == 6
    starts = sorted(STARTS)
    assert len(starts) == 4
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.15, gaps


def test_worker_rate_limit_must_be_positive(client: Client) -> None:
    with pytest.raises(ValueError, match="max_activities_per_second"):
        Worker(client, task_queue="t", activities=[counted], max_activities_per_second=0)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"initial_interval": timedelta(seconds=-1)}, "initial_interval"),
        ({"backoff_coefficient": 0.5}, "backoff_coefficient"),
        (
            {"initial_interval": timedelta(seconds=2), "maximum_interval": timedelta(seconds=1)},
            "maximum_interval",
        ),
    ],
)
def test_invalid_retry_policies_are_refused_naming_the_field(
    kwargs: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize("inline_budget", [timedelta(0), timedelta(seconds=1)])
async def test_an_async_completion_outlives_the_worker_that_started_it(
    client: Client, inline_budget: timedelta
) -> None:
    """The worker hands the attempt to an outside completer, then stops (its session ends,
    which times out the attempts it still runs): the handed-off attempt is not its any more,
    so the completer's answer still completes the workflow. Queued and inline activities."""
    workflow_id = f"handed-off-{inline_budget.total_seconds():g}"
    async with Worker(
        client,
        task_queue="t",
        workflows=[waits_for_approval],
        activities=[waits_for_human],
        inline_activity_budget=inline_budget,
    ):
        handle = await client.start(waits_for_approval, "o-2", id=workflow_id, task_queue="t")
        token = await eventually(lambda: _token(workflow_id))

        async def handed_off() -> bool | None:
            pending = (await handle.describe()).pending_activities
            return True if pending and not pending[0].last_worker_identity else None

        await eventually(handed_off)
    await asyncio.sleep(1.0)  # the server has handled the worker's lost session
    assert of_type(await handle.history(), "ActivityTimedOut") == []
    await client.complete_activity(token, "approved later")
    async with Worker(client, task_queue="t", workflows=[waits_for_approval]):
        assert await asyncio.wait_for(handle.result(), 10) == "approved later"


@workflow
async def cancels_unstarted() -> str:
    job = asyncio.ensure_future(
        workflow.execute_activity(
            where, task_queue="nobody-polls", start_to_close_timeout=timedelta(seconds=30)
        )
    )
    await workflow.sleep(0.2)
    job.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await job
    await workflow.sleep(0.2)  # more commands in the task that cancelled
    return "done"


async def test_cancelling_an_activity_no_worker_started_then_going_on(client: Client) -> None:
    """The server resolves the cancel of an unstarted activity among the task's command-events;
    the worker must not take the command-events after it for a nondeterminism."""
    async with Worker(client, task_queue="t", workflows=[cancels_unstarted]):
        handle = await client.start(cancels_unstarted, id="cancel-unstarted", task_queue="t")
        assert await asyncio.wait_for(handle.result(), 15) == "done"
        history = await handle.history()
    assert of_type(history, "WorkflowTaskFailed") == []
    assert [e.type for e in history].count("ActivityCanceled") == 1
    replay(history, [cancels_unstarted])
