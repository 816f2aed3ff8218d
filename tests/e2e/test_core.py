"""End to end: a real server subprocess, real workers, real gRPC and Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chronicle import (
    Worker,
    WorkflowAlreadyStarted,
    WorkflowFailed,
    WorkflowNotFound,
)
from tests.e2e import workflows as wf

ALL_WORKFLOWS = [
    wf.add_steps,
    wf.slow_steps,
    wf.fan_out,
    wf.mixed,
    wf.retries_then_succeeds,
    wf.fails_with_activity_error,
    wf.catches_activity_error,
    wf.takes_dataclass,
    wf.buggy,
]
ALL_ACTIVITIES = [
    wf.increment,
    wf.slow_increment,
    wf.sync_double,
    wf.flaky,
    wf.rejects,
    wf.describe_order,
]


@pytest.fixture
async def worker(client: Any) -> AsyncIterator[Worker]:
    """An in-process worker on task queue "e2e" serving every test workflow."""
    async with Worker(
        client, task_queue="e2e", workflows=ALL_WORKFLOWS, activities=ALL_ACTIVITIES
    ) as running:
        yield running


def events_of(history: list[Any], type_name: str) -> list[Any]:
    return [e for e in history if e.type == type_name]


async def test_sequential_activities_return_the_result(client: Any, worker: Worker) -> None:
    handle = await client.start(wf.add_steps, 5, 10, id="seq-1", task_queue="e2e")
    assert await handle.result() == 15
    history = await handle.history()
    assert [e.id for e in history] == list(range(1, len(history) + 1))
    assert len(events_of(history, "ActivityScheduled")) == 10
    assert len(events_of(history, "ActivityCompleted")) == 10
    assert history[-1].type == "WorkflowCompleted"


async def test_start_by_name_and_result_by_handle(client: Any, worker: Worker) -> None:
    await client.start("add_steps", 1, 2, id="by-name", task_queue="e2e")
    assert await client.get_handle("by-name").result() == 3


async def test_gather_runs_activities_in_parallel(client: Any, worker: Worker) -> None:
    handle = await client.start(wf.fan_out, [1, 2, 3, 4], id="fan", task_queue="e2e")
    assert await handle.result() == [2, 3, 4, 5]
    history = await handle.history()
    scheduled = [e.id for e in events_of(history, "ActivityScheduled")]
    # all four were scheduled by one workflow task, before any of them completed
    first_completion = events_of(history, "ActivityCompleted")[0].id
    assert len(scheduled) == 4
    assert max(scheduled) < first_completion


async def test_sync_activity_and_durable_timer(client: Any, worker: Worker) -> None:
    handle = await client.start(wf.mixed, 21, id="mixed", task_queue="e2e")
    assert await handle.result() == 42
    history = await handle.history()
    assert len(events_of(history, "TimerStarted")) == 1
    assert len(events_of(history, "TimerFired")) == 1


async def test_activity_retries_until_success_without_events_per_attempt(
    client: Any, worker: Worker
) -> None:
    handle = await client.start(wf.retries_then_succeeds, 3, id="flaky", task_queue="e2e")
    assert await handle.result() == "ok on attempt 3"
    history = await handle.history()
    completed = events_of(history, "ActivityCompleted")
    assert len(completed) == 1
    assert completed[0].attributes.attempt == 3
    assert events_of(history, "ActivityFailed") == []


async def test_non_retryable_failure_fails_the_workflow(client: Any, worker: Worker) -> None:
    handle = await client.start(
        wf.fails_with_activity_error, "no funds", id="fail", task_queue="e2e"
    )
    with pytest.raises(WorkflowFailed) as raised:
        await handle.result()
    assert "no funds" in str(raised.value.cause) or "no funds" in repr(raised.value.cause.__cause__)
    history = await handle.history()
    failed = events_of(history, "ActivityFailed")
    assert len(failed) == 1
    assert failed[0].attributes.attempt == 1
    assert history[-1].type == "WorkflowFailed"


async def test_workflow_can_catch_activity_error_and_see_its_cause(
    client: Any, worker: Worker
) -> None:
    handle = await client.start(wf.catches_activity_error, "declined", id="catch", task_queue="e2e")
    result = await handle.result()
    assert result.startswith("caught ")
    assert "rejected: declined" in result


async def test_dataclass_arguments_round_trip(client: Any, worker: Worker) -> None:
    handle = await client.start(
        wf.takes_dataclass, wf.Order("o-7", 1299), id="dc", task_queue="e2e"
    )
    assert await handle.result() == "o-7:1299"


async def test_duplicate_running_id_is_rejected(client: Any) -> None:
    await client.start(wf.add_steps, 0, 1, id="dup", task_queue="nobody-polls")
    with pytest.raises(WorkflowAlreadyStarted):
        await client.start(wf.add_steps, 0, 1, id="dup", task_queue="nobody-polls")
    history = await client.get_handle("dup").history()
    assert [e.type for e in history] == ["WorkflowStarted", "WorkflowTaskScheduled"]


async def test_unknown_workflow_id_raises_not_found(client: Any) -> None:
    with pytest.raises(WorkflowNotFound, match="no-such-id"):
        await client.get_handle("no-such-id").describe()


async def test_unencodable_argument_names_the_argument_and_starts_nothing(client: Any) -> None:
    with pytest.raises((TypeError, ValueError)) as raised:
        await client.start(wf.add_steps, object(), 1, id="bad-arg", task_queue="e2e")
    assert "argument" in str(raised.value)
    with pytest.raises(WorkflowNotFound):
        await client.get_handle("bad-arg").describe()


async def test_bug_in_workflow_fails_the_task_not_the_run(client: Any, worker: Worker) -> None:
    handle = await client.start(wf.buggy, 1, id="buggy", task_queue="e2e")
    for _ in range(100):
        description = await handle.describe()
        if description.last_workflow_task_failure is not None:
            break
        await asyncio.sleep(0.1)
    assert description.status == "running"
    assert "KeyError" in str(description.last_workflow_task_failure)
    await handle.terminate(reason="test over")


async def test_unknown_workflow_type_waits_for_a_worker_that_serves_it(
    client: Any, worker: Worker
) -> None:
    handle = await client.start("not_served_here", id="unknown-type", task_queue="e2e")
    for _ in range(100):
        description = await handle.describe()
        if description.last_workflow_task_failure is not None:
            break
        await asyncio.sleep(0.1)
    assert description.status == "running"
    assert "not_served_here" in str(description.last_workflow_task_failure)
    await handle.terminate(reason="test over")
