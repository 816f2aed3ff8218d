"""The workflow half of ``Worker`` (sticky cache, task failures, deadlocks, eviction) against the
real server and the real ``WorkflowInstance``.

``ENTRIES`` records every time a workflow function starts running: once per instance built for a
run. A run served from the sticky cache starts once; a cache miss replays it into a fresh
instance, which starts it again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from chronicle.sdk._grpc import ServerUnavailableError
from chronicle.sdk._guards import WorkflowDeterminismWarning
from chronicle.sdk.client import Client, WorkflowHandle
from chronicle.sdk.worker import Worker
from chronicle.sdk.workflow import workflow
from tests.sdk_io.helpers import eventually, of_type

ENTRIES: list[str] = []
BLOCKED: set[str] = set()


@workflow
async def stepper(steps: int) -> int:
    ENTRIES.append(workflow.info().workflow_id)
    total = 0
    for _ in range(steps):
        total += int(await workflow.wait_signal("next"))
    return total


@workflow
async def other() -> None: ...


@workflow
async def broken() -> None:
    settings: dict[str, str] = {}
    settings["missing-key"] += "x"


@workflow
async def blocks_once() -> str:
    workflow_id = workflow.info().workflow_id
    if workflow_id not in BLOCKED:
        BLOCKED.add(workflow_id)
        time.sleep(3)  # noqa: ASYNC251 - the deadlock under test
    return "unblocked"


def cached(worker: Worker) -> list[str]:
    assert worker._workflow_worker is not None
    return worker._workflow_worker.cached_runs


async def tasks_done(handle: WorkflowHandle[Any], count: int) -> bool | None:
    """True once ``count`` workflow tasks of the run completed."""
    completed = of_type(await handle.history(), "WorkflowTaskCompleted")
    return True if len(completed) >= count else None


async def wait_cached(worker: Worker, handle: WorkflowHandle[Any], tasks: int) -> None:
    """Wait until ``tasks`` workflow tasks completed and the run sits in the worker's cache."""

    async def ready() -> bool | None:
        done = await tasks_done(handle, tasks)
        return True if done and handle.run_id in cached(worker) else None

    await eventually(ready)


async def test_the_sticky_cache_serves_every_task_from_one_instance(client: Client) -> None:
    async with Worker(client, task_queue="wf", workflows=[stepper]) as worker:
        handle = await client.start(stepper, 3, id="sticky-1", task_queue="wf")
        for step in range(3):
            await wait_cached(worker, handle, step + 1)
            assert cached(worker) == [handle.run_id]
            await handle.signal("next", step + 1)
        assert await asyncio.wait_for(handle.result(), 15) == 6
    assert ENTRIES.count("sticky-1") == 1  # never rebuilt: each task fed the cached instance
    events = await handle.history()
    assert {s.identity for s in of_type(events, "WorkflowTaskStarted")} == {worker.identity}
    assert len(of_type(events, "WorkflowTaskCompleted")) == 4
    assert of_type(events, "WorkflowTaskFailed") == []


async def test_a_cache_miss_replays_the_full_history(client: Client) -> None:
    """With room for one run, starting ``b`` evicts ``a``; ``a``'s next (sticky) task then finds
    no instance, so the worker fetches the whole history and replays it."""
    async with Worker(
        client, task_queue="wf", workflows=[stepper], max_cached_workflows=1
    ) as worker:
        a = await client.start(stepper, 1, id="miss-a", task_queue="wf")
        await wait_cached(worker, a, 1)
        b = await client.start(stepper, 1, id="miss-b", task_queue="wf")
        await wait_cached(worker, b, 1)
        assert cached(worker) == [b.run_id]
        await a.signal("next", 41)
        assert await asyncio.wait_for(a.result(), 15) == 41
        await b.terminate("test over")
    assert ENTRIES.count("miss-a") == 2  # rebuilt by the replay
    events = await a.history()
    assert {s.identity for s in of_type(events, "WorkflowTaskStarted")} == {worker.identity}
    assert of_type(events, "WorkflowTaskFailed") == []


async def test_an_unknown_workflow_type_fails_the_task_naming_the_served_types(
    client: Client,
) -> None:
    async with Worker(client, task_queue="wf", workflows=[stepper, other]):
        handle = await client.start("nope", id="unknown-wf", task_queue="wf")

        async def failed() -> Any:
            return (await handle.describe()).last_workflow_task_failure

        failure = await eventually(failed)
        description = await handle.describe()
    assert "'nope'" in failure.message
    assert "other, stepper" in failure.message
    assert description.status == "running"
    [task_failed, *_] = of_type(await handle.history(), "WorkflowTaskFailed")
    assert task_failed.cause == "unknown_workflow_type"
    await handle.terminate("test over")


async def test_an_error_in_workflow_code_fails_the_task_and_evicts(client: Client) -> None:
    async with Worker(client, task_queue="wf", workflows=[broken]) as worker:
        handle = await client.start(broken, id="broken-1", task_queue="wf")

        async def failed() -> Any:
            return (await handle.describe()).last_workflow_task_failure

        failure = await eventually(failed)
        description = await handle.describe()
        assert handle.run_id not in cached(worker)
    assert failure.type == "KeyError"
    assert "missing-key" in failure.message
    assert 'settings["missing-key"]' in failure.stack  # where in the workflow code
    assert description.status == "running"  # the task failed, not the run
    [task_failed, *_] = of_type(await handle.history(), "WorkflowTaskFailed")
    assert task_failed.cause == "workflow_error"
    await handle.terminate("test over")


async def test_a_blocked_workflow_fails_the_task_as_a_deadlock_with_its_stack(
    client: Client,
) -> None:
    guard_warning = pytest.warns(WorkflowDeterminismWarning, match=r"time\.sleep\(\) called from")
    with guard_warning:  # the guard rails name the blocking call too
        async with Worker(client, task_queue="wf", workflows=[blocks_once], deadlock_timeout=0.5):
            handle = await client.start(blocks_once, id="block-1", task_queue="wf")
            failure = await _deadlock_failure(handle)
            assert "did not finish within 0.5 s" in failure.message
            assert "time.sleep(3)" in failure.stack
            assert (await handle.describe()).status == "running"
            # The server retries the task; this time the code does not block.
            assert await asyncio.wait_for(handle.result(), 15) == "unblocked"
    [task_failed] = of_type(await handle.history(), "WorkflowTaskFailed")
    assert task_failed.cause == "deadlock"


async def _deadlock_failure(handle: Any) -> Any:
    async def failed() -> Any:
        return (await handle.describe()).last_workflow_task_failure

    return await eventually(failed)


async def test_a_closed_workflow_is_evicted_after_its_completion(client: Client) -> None:
    async with Worker(client, task_queue="wf", workflows=[stepper]) as worker:
        keep = await client.start(stepper, 1, id="stays-open", task_queue="wf")
        close = await client.start(stepper, 1, id="closes", task_queue="wf")
        await wait_cached(worker, keep, 1)
        await wait_cached(worker, close, 1)
        await close.signal("next", 1)
        assert await asyncio.wait_for(close.result(), 15) == 1

        async def evicted() -> bool | None:
            return True if cached(worker) == [keep.run_id] else None

        await eventually(evicted)
        await keep.terminate("test over")


GATE = threading.Event()
ENTERED = threading.Event()


@workflow
async def gated() -> int:
    a = int(await workflow.wait_signal("a"))
    b = int(await workflow.wait_signal("b"))
    ENTERED.set()
    GATE.wait(10)  # test-only: hold this activation while the worker handles another answer
    return a + b


class _LostCompletion:
    """A connection whose next ``CompleteWorkflowTask`` is committed by the server but answered
    ``UNAVAILABLE`` (as after a lost response whose retry came back ``NOT_FOUND``), after the
    run's next workflow task has reached the worker and is running."""

    def __init__(self, real: Any, on_committed: Any) -> None:
        self._real = real
        self._on_committed = on_committed
        self.completions = 0
        self.raised = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def call(self, method: str, request: Any, **kwargs: Any) -> Any:
        response = await self._real.call(method, request, **kwargs)
        if method == "CompleteWorkflowTask":
            self.completions += 1
            if self.completions == 1:
                await self._on_committed()
                self.raised.set()
                raise ServerUnavailableError("response lost", code="UNAVAILABLE")
        return response


async def test_a_lost_completion_answer_does_not_evict_the_instance_the_next_task_runs_on(
    client: Client,
) -> None:
    """Task 2's completion is committed, but its answer is lost. Task 3 (sticky, continuing
    the cached instance) is already running when the worker learns of the failure: dropping the
    instance then would close it under task 3's feet, from another thread."""
    GATE.clear()
    ENTERED.clear()
    async with Worker(
        client, task_queue="wf", workflows=[gated], deadlock_timeout=15, determinism_guard="off"
    ) as worker:
        handle = await client.start(gated, id="lost-answer", task_queue="wf")
        await wait_cached(worker, handle, 1)

        async def on_committed() -> None:
            await handle.signal("b", 2)  # task 3 goes to this worker (sticky)
            assert await asyncio.to_thread(ENTERED.wait, 10), "task 3 did not start"

        workflow_worker = worker._workflow_worker
        assert workflow_worker is not None
        lossy = _LostCompletion(workflow_worker.connection, on_committed)
        workflow_worker.connection = lossy  # type: ignore[assignment]
        await handle.signal("a", 1)
        await asyncio.wait_for(lossy.raised.wait(), 15)
        await asyncio.sleep(0.5)  # the worker handles the failed completion
        GATE.set()
        assert await asyncio.wait_for(handle.result(), 15) == 3
    assert of_type(await handle.history(), "WorkflowTaskFailed") == []
