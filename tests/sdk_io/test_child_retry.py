"""A child workflow's retry policy (``workflow.execute_child(..., retry=RetryPolicy(...))``) over a
real server: the child's failed runs are retried as new runs of its chain, and the parent is told
only the outcome of the chain's last run (docs/workflow-semantics.md, Workflow retry policy)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from chronicle import ApplicationError, ChildWorkflowError, Client, RetryPolicy
from chronicle.history import events as ev
from chronicle.history.payloads import from_payload
from chronicle.sdk.replay import replay
from chronicle.sdk.worker import Worker
from chronicle.sdk.workflow import workflow
from tests.sdk_io.helpers import eventually, of_type

QUEUE = "child-retry"
SHORT = timedelta(milliseconds=100)


@workflow(name="child_fails_until")
async def child_fails_until(good_attempt: int, error_type: str) -> int:
    """Fails (``ApplicationError`` of ``error_type``) until attempt ``good_attempt``."""
    attempt = workflow.info().attempt
    if attempt < good_attempt:
        raise ApplicationError(f"child attempt {attempt} fails", type=error_type)
    return attempt


@workflow(name="parent_of_retried_child")
async def parent_of_retried_child(
    child_id: str, good_attempt: int, error_type: str, maximum_attempts: int
) -> str:
    """Runs ``child_fails_until`` with a retry policy; its result, or the error chain."""
    policy = RetryPolicy(
        maximum_attempts=maximum_attempts,
        initial_interval=SHORT,
        non_retryable_error_types=("Fatal",),
    )
    try:
        result = await workflow.execute_child(
            child_fails_until, good_attempt, error_type, id=child_id, retry=policy
        )
    except ChildWorkflowError as err:
        inner = err.cause.__cause__ if err.cause is not None else None
        return f"{type(err).__name__}|{err.cause}|{inner}"
    return f"ok {result}"


@workflow(name="parent_with_handle_of_retried_child")
async def parent_with_handle_of_retried_child(child_id: str) -> str:
    """``start_child`` takes ``retry`` too; the handle's run id is the chain's first run."""
    handle = await workflow.start_child(
        child_fails_until,
        2,
        "Flaky",
        id=child_id,
        retry=RetryPolicy(maximum_attempts=2, initial_interval=SHORT),
    )
    return f"{handle.run_id} {await handle}"


@workflow(name="passes_a_bad_retry")
async def passes_a_bad_retry() -> str:
    """A ``retry`` that is not a ``RetryPolicy`` is refused at the call, in workflow code."""
    try:
        workflow.start_child(child_fails_until, 1, "", retry={"maximum_attempts": 3})  # type: ignore[arg-type]
    except TypeError as err:
        return str(err)
    return "accepted"


@workflow(name="parent_of_slowly_retried_child")
async def parent_of_slowly_retried_child(child_id: str) -> int:
    """A child that fails once and is retried only after a minute: the parent waits on it."""
    policy = RetryPolicy(maximum_attempts=2, initial_interval=timedelta(seconds=60))
    return await workflow.execute_child(child_fails_until, 2, "Flaky", id=child_id, retry=policy)


WORKFLOWS = [
    parent_of_slowly_retried_child,
    child_fails_until,
    parent_of_retried_child,
    parent_with_handle_of_retried_child,
    passes_a_bad_retry,
]


async def _chain(client: Client, parent_history: list[ev.Event]) -> list[list[ev.Event]]:
    """The histories of the runs of the parent's one child, from the run it started as,
    following ``new_run_id``; they are all the runs of the child's workflow id."""
    [initiated] = of_type(parent_history, "ChildWorkflowInitiated")
    [started] = of_type(parent_history, "ChildWorkflowStarted")
    workflow_id, run_id = initiated.workflow_id, started.run_id
    histories: list[list[ev.Event]] = []
    while run_id:
        history = await client.get_handle(workflow_id, run_id=run_id).history()
        histories.append(history)
        run_id = getattr(history[-1].attributes, "new_run_id", "")
    runs = [r async for r in client.list(f"workflow_id = '{workflow_id}'")]
    assert len(histories) == len(runs)
    return histories


async def test_a_child_that_fails_twice_then_succeeds_gives_the_parent_its_success(
    client: Client,
) -> None:
    """The child's first two runs close as failed naming their retry; the parent records one
    ``ChildWorkflowCompleted``, after the third run closed, and no failure; its
    ``ChildWorkflowInitiated`` and the child's runs carry the policy; the parent's history
    replays."""
    async with Worker(client, task_queue=QUEUE, workflows=WORKFLOWS):
        parent = await client.start(
            parent_of_retried_child, "kid-3", 3, "Flaky", 3, id="parent-3", task_queue=QUEUE
        )
        assert await asyncio.wait_for(parent.result(), 20) == "ok 3"
    history = await parent.history()
    chain = await _chain(client, history)
    assert len(chain) == 3
    policy = RetryPolicy(
        maximum_attempts=3, initial_interval=SHORT, non_retryable_error_types=("Fatal",)
    )
    for attempt, run in enumerate(chain, start=1):
        started = run[0].attributes
        assert isinstance(started, ev.WorkflowStarted)
        assert (started.attempt, started.retry_policy) == (attempt, policy)
        assert started.parent is not None
        assert started.parent.workflow_id == "parent-3"
    assert [h[-1].type for h in chain] == ["WorkflowFailed", "WorkflowFailed", "WorkflowCompleted"]
    [initiated] = of_type(history, "ChildWorkflowInitiated")
    assert initiated.retry_policy == policy
    assert of_type(history, "ChildWorkflowFailed") == []
    [completed] = [e for e in history if e.type == "ChildWorkflowCompleted"]
    assert from_payload(completed.attributes.result) == 3
    assert completed.time >= chain[-1][-1].time  # told when the chain ended, not before
    replay(history, WORKFLOWS)


async def test_a_child_out_of_attempts_fails_the_parent_with_its_last_failure(
    client: Client,
) -> None:
    """``maximum_attempts=2`` and a child that always fails: two runs, then the parent gets one
    ``ChildWorkflowFailed`` wrapping the second run's failure."""
    async with Worker(client, task_queue=QUEUE, workflows=WORKFLOWS):
        parent = await client.start(
            parent_of_retried_child, "kid-2", 99, "Flaky", 2, id="parent-2", task_queue=QUEUE
        )
        outcome = await asyncio.wait_for(parent.result(), 20)
    kind, cause, inner = outcome.split("|")
    assert kind == "ChildWorkflowError"
    assert "kid-2" in cause
    assert "failed" in cause
    assert inner == "child attempt 2 fails"
    history = await parent.history()
    chain = await _chain(client, history)
    assert len(chain) == 2
    assert chain[-1][-1].attributes.new_run_id == ""
    assert len(of_type(history, "ChildWorkflowFailed")) == 1
    assert of_type(history, "ChildWorkflowCompleted") == []
    replay(history, WORKFLOWS)


async def test_a_childs_non_retryable_error_type_is_not_retried(client: Client) -> None:
    """An error type in the child's ``non_retryable_error_types`` ends the chain at once."""
    async with Worker(client, task_queue=QUEUE, workflows=WORKFLOWS):
        parent = await client.start(
            parent_of_retried_child, "kid-fatal", 3, "Fatal", 3, id="parent-f", task_queue=QUEUE
        )
        outcome = await asyncio.wait_for(parent.result(), 20)
    assert outcome.split("|")[2] == "child attempt 1 fails"
    assert len(await _chain(client, await parent.history())) == 1


async def test_start_child_takes_a_retry_policy_and_its_handle_awaits_the_chain(
    client: Client,
) -> None:
    async with Worker(client, task_queue=QUEUE, workflows=WORKFLOWS):
        parent = await client.start(
            parent_with_handle_of_retried_child, "kid-h", id="parent-h", task_queue=QUEUE
        )
        run_id, result = (await asyncio.wait_for(parent.result(), 20)).split()
    chain = await _chain(client, await parent.history())
    assert len(chain) == 2
    assert result == "2"
    assert run_id == chain[0][0].attributes.first_run_id


async def test_the_parent_close_policy_reaches_a_child_waiting_for_its_retry(
    client: Client,
) -> None:
    """The parent closes while its child's second run waits out its back-off: the parent-close
    policy (terminate) follows the child's chain to that run, and the child's chain ends."""
    async with Worker(client, task_queue=QUEUE, workflows=WORKFLOWS):
        parent = await client.start(
            parent_of_slowly_retried_child, "kid-slow", id="parent-slow", task_queue=QUEUE
        )

        async def retry_waiting() -> bool | None:
            runs = [r async for r in client.list("workflow_id = 'kid-slow'")]
            return True if len(runs) == 2 else None

        await eventually(retry_waiting)
        assert of_type(await parent.history(), "ChildWorkflowFailed") == []  # not told yet
        await parent.terminate("test over")
    chain = await _chain(client, await parent.history())
    assert [run[-1].type for run in chain] == ["WorkflowFailed", "WorkflowTerminated"]
    assert (await client.get_handle("kid-slow").describe()).status == "terminated"


async def test_a_retry_that_is_not_a_retry_policy_is_refused_at_the_call(client: Client) -> None:
    async with Worker(client, task_queue=QUEUE, workflows=WORKFLOWS):
        handle = await client.start(passes_a_bad_retry, id="bad-retry", task_queue=QUEUE)
        message = await asyncio.wait_for(handle.result(), 20)
    assert message == "retry must be a RetryPolicy or None, got dict"


def test_retry_policy_refuses_nan_and_negative_values_where_it_is_made() -> None:
    """What workflow code passes as ``retry=`` validates itself (``RetryPolicy.__post_init__``)."""
    with pytest.raises(ValueError, match="maximum_attempts"):
        RetryPolicy(maximum_attempts=-1)
    with pytest.raises(ValueError, match="backoff_coefficient"):
        RetryPolicy(backoff_coefficient=float("nan"))
    with pytest.raises(ValueError, match="initial_interval"):
        RetryPolicy(initial_interval=-SHORT)
