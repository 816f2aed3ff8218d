"""Lost answers with the real worker: a completion that started the run's next workflow task
(or activities) for the worker is cancelled on the server once its write has committed (its
call stream broke); the worker, retrying, is refused as a duplicate and releases what it
never got."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from chronicle.history import events as ev
from chronicle.history.values import RetryPolicy
from chronicle.sdk.activity import activity
from chronicle.sdk.client import Client
from chronicle.sdk.worker import Worker
from chronicle.sdk.workflow import workflow
from chronicle.server.engine import workflow_task

LONG = timedelta(seconds=60)
"""A timeout far beyond the waits of these tests (20 s): nothing here may wait for it."""


def _hang_after_commit(
    monkeypatch: pytest.MonkeyPatch, when: Callable[[workflow_task.Completion], bool]
) -> asyncio.Event:
    """Make the first workflow-task completion for which ``when`` holds commit, then never
    answer (until its call is cancelled); the event is set once it has committed."""
    real_complete = workflow_task.complete
    committed = asyncio.Event()

    async def commits_then_hangs(*args: Any, **kwargs: Any) -> Any:
        completion = await real_complete(*args, **kwargs)
        if when(completion) and not committed.is_set():
            committed.set()
            await asyncio.Event().wait()  # no reply until the call is cancelled
        return completion

    monkeypatch.setattr(workflow_task, "complete", commits_then_hangs)
    return committed


def _break_call_stream(client: Client) -> None:
    """Break the client's call stream: the server cancels the calls in flight on it."""
    calls = client.connection._stream
    assert calls is not None
    assert calls._stream is not None
    calls._stream.fail("test: the call stream broke")


@activity
async def add_one(x: int) -> int:
    """x + 1."""
    return x + 1


@workflow
async def two_steps(x: int) -> int:
    """Two sequential activities: each runs inline, and its result's commit starts the next
    workflow task for the worker (eager)."""
    once = await workflow.execute_activity(add_one, x)
    return int(await workflow.execute_activity(add_one, once))


async def test_a_completion_cancelled_once_its_write_committed(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    committed = _hang_after_commit(monkeypatch, lambda c: c.workflow_task is not None)
    async with Worker(client, task_queue="lost", workflows=[two_steps], activities=[add_one]):
        handle = await client.start(
            two_steps,
            1,
            id="cancelled-mid-write",
            task_queue="lost",
            task_timeout=LONG,
        )
        await asyncio.wait_for(committed.wait(), 20)
        _break_call_stream(client)
        assert await asyncio.wait_for(handle.result(), 20) == 3
    history = await handle.history()
    assert [e.id for e in history] == list(range(1, len(history) + 1))
    assert [e.type for e in history].count("ActivityCompleted") == 2
    [timed_out] = [e for e in history if isinstance(e.attributes, ev.WorkflowTaskTimedOut)]
    lost = history[timed_out.attributes.started_event_id - 1]
    assert isinstance(lost.attributes, ev.WorkflowTaskStarted)
    assert lost.attributes.request_id  # started by the completion whose answer was lost


ONE_ATTEMPT = RetryPolicy(maximum_attempts=1)
"""An attempt given to a lost answer must not use up the only one."""


@workflow
async def side_by_side(x: int) -> int:
    """Two activities at once: with no inline budget, both are started eagerly for the worker
    by the completion that schedules them, and only its answer carries them."""
    first, second = await asyncio.gather(
        workflow.execute_activity(add_one, x, start_to_close_timeout=LONG, retry=ONE_ATTEMPT),
        workflow.execute_activity(add_one, x + 10, start_to_close_timeout=LONG, retry=ONE_ATTEMPT),
    )
    return int(first) + int(second)


async def test_activities_started_eagerly_in_a_lost_answer_run_at_once_uncounted(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    committed = _hang_after_commit(monkeypatch, lambda c: bool(c.activity_tasks))
    async with Worker(
        client,
        task_queue="lost-acts",
        workflows=[side_by_side],
        activities=[add_one],
        inline_activity_budget=0,  # nothing inline: the activities are started eagerly
    ):
        handle = await client.start(
            side_by_side, 1, id="eager-acts-lost", task_queue="lost-acts", task_timeout=LONG
        )
        await asyncio.wait_for(committed.wait(), 20)
        _break_call_stream(client)
        # long before the activities' 60 s start-to-close
        assert await asyncio.wait_for(handle.result(), 20) == 14
    history = await handle.history()
    assert [e.type for e in history].count("ActivityCompleted") == 2
    completed = [e.attributes for e in history if isinstance(e.attributes, ev.ActivityCompleted)]
    # attempt 1 went to the lost answer, was never run, and was given back uncounted
    assert all(c.attempt == 1 for c in completed)
