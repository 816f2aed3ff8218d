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
from datetime import timedelta
from typing import Any

import pytest

from chronicle.sdk._grpc import ServerUnavailableError
from chronicle.sdk._guards import WorkflowDeterminismWarning
from chronicle.sdk.activity import activity
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


@activity
async def echo(x: int) -> int:
    return x


@workflow
async def five_steps() -> int:
    total = 0
    for i in range(5):
        total += await workflow.execute_activity("echo", i)
    return total


async def test_a_full_cache_never_evicts_a_run_whose_task_is_in_flight(client: Client) -> None:
    """With room for 2 runs and 20 running at once, a completing task must not evict (close)
    the instance of a run whose own task is still being activated or completed: that
    instance would be cached again, closed, and fail the run's next task."""
    async with Worker(
        client,
        task_queue="small",
        workflows=[five_steps],
        activities=[echo],
        max_cached_workflows=2,
    ) as worker:
        handles = [
            await client.start(five_steps, id=f"small-cache-{i}", task_queue="small")
            for i in range(20)
        ]
        results = await asyncio.gather(*(asyncio.wait_for(h.result(), 60) for h in handles))
        assert len(cached(worker)) <= 2
    assert results == [10] * 20


def slow_query() -> str:
    time.sleep(1.5)  # longer than the deadlock timeout, on purpose
    return "slow"


@workflow
async def queried_then_signalled() -> str:
    workflow.on_query("slow", slow_query)
    await workflow.wait_signal("go")
    return str(await workflow.execute_activity("echo", 7))


async def test_a_query_that_overruns_the_deadlock_timeout_drops_the_instance(
    client: Client,
) -> None:
    """The query's handler is still running in its thread when the query gives up: the run's
    next task must not share that instance (the handler would restore its state over the
    task's), so it replays into a new one and the run completes."""
    ENTRIES.clear()
    async with Worker(
        client,
        task_queue="wf",
        workflows=[queried_then_signalled],
        activities=[echo],
        deadlock_timeout=1.0,
        determinism_guard="off",
    ) as worker:
        handle = await client.start(queried_then_signalled, id="slow-query", task_queue="wf")
        await wait_cached(worker, handle, 1)
        with pytest.raises(Exception, match="did not return within"):
            await handle.query("slow")
        assert handle.run_id not in cached(worker)
        await handle.signal("go")
        assert await asyncio.wait_for(handle.result(), 20) == "7"


RELEASE = threading.Event()


@workflow
async def stuck_for_good() -> None:
    RELEASE.wait()  # blocks its thread until the test ends


@workflow
async def trivial() -> str:
    return "done"


async def test_threads_stuck_in_workflow_code_do_not_starve_the_worker(client: Client) -> None:
    """Each attempt of a task that blocks for good strands its thread; with 2 threads, two
    attempts used to leave none for any other workflow. The stuck thread's pool is replaced."""
    RELEASE.clear()
    try:
        async with Worker(
            client,
            task_queue="stuck",
            workflows=[stuck_for_good, trivial],
            max_concurrent_workflow_tasks=2,
            deadlock_timeout=0.3,
            determinism_guard="off",
        ):
            stuck = await client.start(stuck_for_good, id="stuck-for-good", task_queue="stuck")

            async def deadlocked_twice() -> bool | None:
                failed = of_type(await stuck.history(), "WorkflowTaskFailed")
                return True if len(failed) >= 2 else None

            await eventually(deadlocked_twice, timeout=30)
            other = await client.start(trivial, id="not-starved", task_queue="stuck")
            assert await asyncio.wait_for(other.result(), 10) == "done"
    finally:
        RELEASE.set()


@workflow
async def sleeps_for_ages() -> None:
    await workflow.sleep(timedelta(days=3_000_000))


async def test_commands_the_server_refuses_fail_the_task_in_the_history(client: Client) -> None:
    """A timer of 8,000 years is refused by the server: the refusal is recorded as a failed
    workflow task (cause ``bad_command``, naming the field), not only in the worker's log."""
    async with Worker(client, task_queue="wf", workflows=[sleeps_for_ages]):
        handle = await client.start(sleeps_for_ages, id="ages", task_queue="wf")

        async def failed() -> Any:
            found = of_type(await handle.history(), "WorkflowTaskFailed")
            return found or None

        [task_failed, *_] = await eventually(failed)
    assert task_failed.cause == "bad_command"
    assert "commands[0].duration is 3000000 days" in task_failed.failure.message
