"""Workflow semantics over a real server and real workers: child workflows and parent-close
policies, continue-as-new chains, deterministic values across a worker restart, start options."""

from __future__ import annotations

import asyncio
import itertools
import logging
from datetime import timedelta

import pytest

from chronicle import (
    ApplicationError,
    Client,
    RetryPolicy,
    WorkflowAlreadyStarted,
    WorkflowCancelled,
    WorkflowFailed,
    WorkflowNotFound,
    WorkflowTerminated,
    WorkflowTimedOut,
)
from chronicle.history.payloads import from_payload
from chronicle.sdk._grpc import InvalidArgumentError
from chronicle.sdk.worker import Worker
from chronicle.sdk.workflow import workflow
from tests.e2e import semantics_workflows as sw
from tests.sdk_io.helpers import eventually, of_type
from tests.sdk_io.test_semantics_signals import QUEUE, has_event, worker

# ---------------------------------------------------------------- children


async def test_a_started_child_can_be_signalled_and_awaited(client: Client) -> None:
    async with worker(client):
        handle = await client.start(sw.everything, "hey", id="kid-parent", task_queue=QUEUE)
        await eventually(lambda: has_event(handle, "ChildWorkflowCompleted"))
        kid = client.get_handle("kid-parent-kid")
        assert await kid.result() == "hey:ping"
        history = await handle.history()
        [initiated] = of_type(history, "ExternalSignalInitiated")
        assert (initiated.workflow_id, initiated.signal_name) == ("kid-parent-kid", "go")
        assert of_type(history, "ExternalSignalResolved")[0].failure is None
        await handle.terminate("test over")


async def test_a_child_failure_surfaces_as_child_workflow_error_with_its_cause(
    client: Client,
) -> None:
    async with worker(client):
        handle = await client.start(
            sw.parent_of_failing_child, "no", id="failing-kid-parent", task_queue=QUEUE
        )
        kind, cause, inner = (await handle.result()).split("|")
    assert kind == "ChildWorkflowError"
    assert "failed" in cause
    assert inner == "child says no"


async def test_signalling_a_child_that_already_closed_raises_in_the_parent(client: Client) -> None:
    async with worker(client):
        handle = await client.start(sw.signals_a_finished_child, id="late-signal", task_queue=QUEUE)
        outcome = await handle.result()
    assert outcome.startswith("WorkflowNotFound: ")
    assert "late-signal-child-1" in outcome


async def test_parent_close_policies_and_pending_children_in_describe(client: Client) -> None:
    async with worker(client):
        handle = await client.start(
            sw.parent_with_policies, "pol", id="policy-parent", task_queue=QUEUE
        )
        await eventually(lambda: has_event(handle, "ChildWorkflowStarted", 3))
        pending = (await handle.describe()).pending_children
        assert sorted(c.workflow_id for c in pending) == [
            "pol-abandon",
            "pol-request_cancel",
            "pol-terminate",
        ]
        assert all(c.run_id and c.workflow_type == "waits_forever" for c in pending)
        await handle.signal("finish")
        assert await handle.result() == ["pol-terminate", "pol-request_cancel", "pol-abandon"]
        with pytest.raises(WorkflowTerminated, match="policy-parent"):
            await client.get_handle("pol-terminate").result()
        with pytest.raises(WorkflowCancelled):
            await client.get_handle("pol-request_cancel").result()
        abandoned = client.get_handle("pol-abandon")
        assert (await abandoned.describe()).status == "running"
        await abandoned.terminate("clean up")


# ---------------------------------------------------------------- continue-as-new


async def test_result_follows_a_continue_as_new_chain_to_the_last_run(client: Client) -> None:
    async with worker(client):
        handle = await client.start(sw.chain, 2, [], id="chain", task_queue=QUEUE)
        runs = await client.get_handle("chain").result()
        assert await handle.result() == runs  # the handle of the first run follows too
    assert len(runs) == len(set(runs)) == 3
    assert runs[0] == handle.run_id
    first = await client.get_handle("chain", run_id=runs[0]).history()
    assert first[-1].type == "WorkflowContinuedAsNew"
    assert first[-1].attributes.new_run_id == runs[1]
    assert (await client.get_handle("chain").describe()).run_id == runs[2]


async def test_a_child_that_continues_as_new_reports_its_last_runs_result(client: Client) -> None:
    async with worker(client):
        handle = await client.start(sw.parent_of_chain, 2, id="chain-parent", task_queue=QUEUE)
        runs = await handle.result()
    assert len(runs) == len(set(runs)) == 3
    assert (
        runs[0] == (await client.get_handle("chain-parent-child", run_id=runs[0]).describe()).run_id
    )
    history = await handle.history()
    assert [e.attributes.run_id for e in history if e.type == "ChildWorkflowStarted"] == [runs[0]]
    assert sum(1 for e in history if e.type == "ChildWorkflowCompleted") == 1


# ---------------------------------------------------------------- deterministic values


async def test_deterministic_values_and_the_logger_survive_a_fresh_worker_replaying(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="chronicle.workflow"):
        async with worker(client):
            handle = await client.start(sw.draws, id="draws", task_queue=QUEUE)
            await eventually(lambda: has_event(handle, "ActivityCompleted"))
            await eventually(lambda: has_event(handle, "WorkflowTaskCompleted", 2))
        await handle.signal("go")
        async with worker(client):  # a new worker: no cache, replays the whole history
            result = await handle.result()
    [scheduled] = of_type(await handle.history(), "ActivityScheduled")
    live_first = from_payload(scheduled.input[0])  # what the first worker computed
    assert result["first"] == live_first  # ... and the replaying worker computed again
    assert result["first"]["info"] == ["default", "draws", handle.run_id, "draws"]
    assert result["second"]["uuid"] != result["first"]["uuid"]
    messages = [r.getMessage() for r in caplog.records if "draws" in r.getMessage()]
    assert messages == [
        f"first draws {live_first['uuid']}",
        f"second draws {result['second']['uuid']}",
    ]
    assert all(getattr(r, "workflow_id", None) == "draws" for r in caplog.records[:1])


# ---------------------------------------------------------------- start options


async def test_id_conflict_policies(client: Client) -> None:
    first = await client.start(sw.waits_forever, id="conflict", task_queue="no-worker")
    with pytest.raises(WorkflowAlreadyStarted, match="conflict"):
        await client.start(sw.waits_forever, id="conflict", task_queue="no-worker")
    same = await client.start(
        sw.waits_forever, id="conflict", task_queue="no-worker", id_conflict_policy="use_existing"
    )
    assert (same.run_id, same.started) == (first.run_id, False)
    fresh = await client.start(
        sw.waits_forever,
        id="conflict",
        task_queue="no-worker",
        id_conflict_policy="terminate_existing",
    )
    assert fresh.started
    assert fresh.run_id != first.run_id
    with pytest.raises(WorkflowTerminated, match="terminate_existing"):
        await client.get_handle("conflict", run_id=first.run_id).result()
    assert (await fresh.describe()).status == "running"


async def test_id_reuse_policies(client: Client) -> None:
    async with worker(client):
        done = await client.start(sw.sleeper, 0.01, id="reuse", task_queue=QUEUE)
        await done.result()
        for policy in ("reject_duplicate", "allow_duplicate_failed_only"):
            with pytest.raises(WorkflowAlreadyStarted, match=policy):
                await client.start(
                    sw.sleeper, 0.01, id="reuse", task_queue=QUEUE, id_reuse_policy=policy
                )
        again = await client.start(
            sw.waits_forever, id="reuse", task_queue=QUEUE, id_reuse_policy="allow_duplicate"
        )
        await again.terminate("make it a failure")
        after_failure = await client.start(
            sw.sleeper,
            0.01,
            id="reuse",
            task_queue=QUEUE,
            id_reuse_policy="allow_duplicate_failed_only",
        )
        assert await after_failure.result() == "woke"


@pytest.mark.parametrize("option", ["run_timeout", "execution_timeout"])
async def test_timeouts_close_the_run_as_timed_out(client: Client, option: str) -> None:
    async with worker(client):
        handle = await client.start(
            sw.waits_forever,
            id=f"timeout-{option}",
            task_queue=QUEUE,
            **{option: timedelta(milliseconds=300)},
        )
        with pytest.raises(WorkflowTimedOut):
            await handle.result()
    last = (await handle.history())[-1]
    assert last.type == "WorkflowTimedOut"
    assert last.attributes.timeout == option.removesuffix("_timeout")


async def test_start_delay_holds_the_first_workflow_task_back(client: Client) -> None:
    delay = timedelta(milliseconds=500)
    async with worker(client):
        handle = await client.signal_with_start(
            sw.waits_for_signal,
            60.0,
            signal="go",
            signal_args=["early"],
            id="delayed",
            task_queue=QUEUE,
            start_delay=delay,
            memo={"owner": "ops", "priority": 2},
        )
        description = await handle.describe()
        assert description.memo == {"owner": "ops", "priority": 2}
        assert await handle.result() == "early"
    history = await handle.history()
    assert history[0].attributes.start_delay == delay
    assert [e.type for e in history[:3]] == [
        "WorkflowStarted",
        "SignalReceived",
        "WorkflowTaskScheduled",
    ]
    # the server's own event times: the task was scheduled by the delay's timer, not before
    assert history[2].time - history[0].time >= delay


async def test_a_negative_start_delay_is_rejected_and_nothing_starts(client: Client) -> None:
    with pytest.raises(InvalidArgumentError, match="start_delay must not be negative"):
        await client.start(
            sw.sleeper, 1.0, id="neg-delay", task_queue=QUEUE, start_delay=timedelta(seconds=-1)
        )
    with pytest.raises(WorkflowNotFound):
        await client.get_handle("neg-delay").describe()


async def test_a_retried_start_with_the_same_request_id_starts_once(client: Client) -> None:
    first = await client.start(
        sw.waits_forever, id="once", task_queue="no-worker", request_id="req-1"
    )
    retried = await client.start(
        sw.waits_forever, id="once", task_queue="no-worker", request_id="req-1"
    )
    assert retried.run_id == first.run_id
    assert not retried.started
    runs = [e async for e in client.list("type = 'waits_forever'") if e.workflow_id == "once"]
    assert len(runs) == 1


@workflow(name="continuing_kid")
async def continuing_kid(generation: int) -> str:
    if generation == 0:
        workflow.continue_as_new(1)
    await workflow.wait_signal("finish")
    return "kid done"


@workflow(name="cancelled_parent")
async def cancelled_parent() -> str:
    try:
        return await workflow.execute_child(continuing_kid, 0, id="continuing-kid-1")
    except asyncio.CancelledError:
        return "cancelled with its child"


@workflow(name="signalling_parent")
async def signalling_parent() -> str:
    child = await workflow.start_child(continuing_kid, 0, id="continuing-kid-2")
    await workflow.sleep(timedelta(seconds=1))  # the child has continued as new by then
    await child.signal("finish")
    return await child


async def _continued(client: Client, workflow_id: str) -> None:
    async def two_runs() -> bool | None:
        runs = [r async for r in client.list(f"workflow_id = '{workflow_id}'")]
        return True if len(runs) == 2 else None

    await eventually(two_runs)


async def test_a_childs_handle_reaches_the_child_after_it_continued_as_new(
    client: Client,
) -> None:
    """A child's handle names the run it started as. Signalling or cancelling it after the
    child continued as new reaches the child's current run (no WorkflowNotFound, no hang)."""
    async with Worker(
        client,
        task_queue="kids",
        workflows=[continuing_kid, cancelled_parent, signalling_parent],
    ):
        signalling = await client.start(signalling_parent, id="kid-signaller", task_queue="kids")
        assert await asyncio.wait_for(signalling.result(), 15) == "kid done"
        parent = await client.start(cancelled_parent, id="kid-canceller", task_queue="kids")
        await _continued(client, "continuing-kid-1")
        await parent.cancel()
        assert await asyncio.wait_for(parent.result(), 15) == "cancelled with its child"
        kid = await client.get_handle("continuing-kid-1").describe()
        assert kid.status == "canceled"


# ---------------------------------------------------------------- workflow retry policy


@workflow(name="fails_until")
async def fails_until(good_attempt: int, non_retryable: bool) -> int:
    attempt = workflow.info().attempt
    if attempt < good_attempt:
        raise ApplicationError(f"attempt {attempt} fails", non_retryable=non_retryable)
    return attempt


RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(milliseconds=200))


async def _runs(client: Client, workflow_id: str) -> list[str]:
    """The run ids of ``workflow_id``, oldest first."""
    runs = [r async for r in client.list(f"workflow_id = '{workflow_id}'")]
    return [r.run_id for r in sorted(runs, key=lambda r: r.start_time or 0)]


async def test_the_retry_start_option_retries_a_failed_run_as_a_new_run(client: Client) -> None:
    """``client.start(..., retry=RetryPolicy(...))`` (API.md's start options): a run that fails
    is closed as failed naming its retry, which starts with the same input, ``attempt`` + 1,
    after the back-off; ``result()`` on the start handle gives the last attempt's outcome."""
    async with Worker(client, task_queue="retry", workflows=[fails_until]):
        handle = await client.start(
            fails_until, 3, False, id="retried", task_queue="retry", retry=RETRY
        )
        assert await asyncio.wait_for(handle.result(), 20) == 3
    runs = await _runs(client, "retried")
    assert len(runs) == 3
    assert runs[0] == handle.run_id
    for attempt, (run, following) in enumerate(itertools.pairwise(runs), start=1):
        events = await client.get_handle("retried", run_id=run).history()
        assert events[-1].type == "WorkflowFailed"
        assert events[-1].attributes.new_run_id == following
        assert events[-1].attributes.failure.message == f"attempt {attempt} fails"
        retry = (await client.get_handle("retried", run_id=following).history())[0].attributes
        assert (retry.attempt, retry.continued_from_run_id) == (attempt + 1, run)
        assert retry.first_run_id == handle.run_id
        assert retry.start_delay == RETRY.backoff(attempt)
        assert from_payload(retry.input[0]) == 3
    assert (await client.get_handle("retried", run_id=runs[0]).describe()).status == "failed"


async def test_a_workflow_retry_stops_at_the_last_attempt_and_at_a_non_retryable_error(
    client: Client,
) -> None:
    async with Worker(client, task_queue="retry", workflows=[fails_until]):
        exhausted = await client.start(
            fails_until, 9, False, id="exhausted", task_queue="retry", retry=RETRY
        )
        with pytest.raises(WorkflowFailed, match="attempt 3 fails"):
            await asyncio.wait_for(exhausted.result(), 20)
        final = await client.start(
            fails_until, 9, True, id="non-retryable", task_queue="retry", retry=RETRY
        )
        with pytest.raises(WorkflowFailed, match="attempt 1 fails"):
            await asyncio.wait_for(final.result(), 20)
        plain = await client.start(fails_until, 2, False, id="no-policy", task_queue="retry")
        with pytest.raises(WorkflowFailed, match="attempt 1 fails"):
            await asyncio.wait_for(plain.result(), 20)
    assert len(await _runs(client, "exhausted")) == 3
    assert len(await _runs(client, "non-retryable")) == 1
    assert len(await _runs(client, "no-policy")) == 1
    last = (await client.get_handle("exhausted").history())[-1]
    assert (last.type, last.attributes.new_run_id) == ("WorkflowFailed", "")
