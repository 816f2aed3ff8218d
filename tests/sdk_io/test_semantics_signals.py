"""Workflow semantics over a real server and real workers: durable timers, signals,
wait_condition, cancellation and termination, and the ``chronicle workflow`` CLI for them."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import pytest

from chronicle import (
    Client,
    Worker,
    WorkflowCancelled,
    WorkflowNotFound,
    WorkflowTerminated,
)
from chronicle.server.app import Server
from tests.e2e import semantics_workflows as sw
from tests.sdk_io.helpers import eventually, of_type

QUEUE = "semantics"


def worker(client: Client, task_queue: str = QUEUE) -> Worker:
    """An in-process worker serving every semantics workflow and activity."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=sw.SEMANTICS_WORKFLOWS,
        activities=sw.SEMANTICS_ACTIVITIES,
    )


async def has_event(handle: Any, type_name: str, count: int = 1) -> bool | None:
    """True once the run's history holds ``count`` events of ``type_name`` (for ``eventually``)."""
    history = await handle.history()
    return True if len(of_type(history, type_name)) >= count else None


async def activity_started(handle: Any) -> bool | None:
    """True once a worker runs one of the run's activities (attempts are not events)."""
    pending = (await handle.describe()).pending_activities
    return True if any(a.state == "started" for a in pending) else None


# ---------------------------------------------------------------- timers


async def test_sleep_wait_for_and_asyncio_timeout_are_durable_timers(client: Client) -> None:
    async with worker(client):
        handle = await client.start(sw.timers, id="timers", task_queue=QUEUE)
        assert await handle.result() == ["slept", "wait_for timed out", "timeout fired"]
    history = await handle.history()
    assert len(of_type(history, "TimerStarted")) == 3
    assert len(of_type(history, "TimerFired")) == 3


async def test_zero_and_negative_durations_raise_at_the_call_and_record_nothing(
    client: Client,
) -> None:
    async with worker(client):
        handle = await client.start(sw.bad_durations, id="bad-durations", task_queue=QUEUE)
        errors = await handle.result()
    assert errors == [
        "workflow.sleep duration must be positive, got 0 s",
        "workflow.sleep duration must be positive, got -1 s",
        "wait_signal timeout must be positive, got 0 s",
        "wait_condition timeout must be positive, got -2.5 s",
    ]
    history = await handle.history()
    assert of_type(history, "TimerStarted") == []


# ---------------------------------------------------------------- signals


async def test_signals_sent_before_any_worker_exists_are_delivered_in_order(
    client: Client,
) -> None:
    handle = await client.start(sw.collects, 3, id="early-signals", task_queue=QUEUE)
    for value in (1, 2, 3):
        await handle.signal("add", value)
    await handle.signal("unknown-name", "buffered, never consumed")
    async with worker(client):
        assert await handle.result() == [1, 2, 3]
    received = of_type(await handle.history(), "SignalReceived")
    assert [s.signal_name for s in received] == ["add", "add", "add", "unknown-name"]


async def test_a_signal_that_does_not_fit_its_handler_is_dropped_with_a_warning(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    handle = await client.start(sw.collects, 2, id="bad-signal", task_queue=QUEUE)
    await handle.signal("add", 1)
    await handle.signal("add", 1, 2)  # two arguments for a one-argument handler
    await handle.signal("add", "not a number")  # the handler wants an int
    await handle.signal("add", 3)
    with caplog.at_level(logging.WARNING, logger="chronicle.workflow"):
        async with worker(client):
            assert await handle.result() == [1, 3]
    dropped = [r.getMessage() for r in caplog.records if "dropped signal" in r.getMessage()]
    assert len(dropped) == 2, dropped
    assert "2 argument(s) given" in dropped[0]
    assert "bad-signal" in dropped[0]


async def test_signal_with_start_starts_once_then_signals_the_running_run(client: Client) -> None:
    first = await client.signal_with_start(
        sw.collects, 2, signal="add", signal_args=[10], id="sws", task_queue=QUEUE
    )
    second = await client.signal_with_start(
        sw.collects, 2, signal="add", signal_args=[20], id="sws", task_queue=QUEUE
    )
    assert (first.started, second.started) == (True, False)
    assert first.run_id == second.run_id
    async with worker(client):
        assert await first.result() == [10, 20]


async def test_wait_signal_returns_the_value_or_times_out(client: Client) -> None:
    async with worker(client):
        gets = await client.start(sw.waits_for_signal, 30.0, id="wait-gets", task_queue=QUEUE)
        # signal only once the wait's timer is recorded (a signal that arrives first is taken
        # from the buffer and no timer is ever started)
        await eventually(lambda: has_event(gets, "TimerStarted"))
        await gets.signal("go", "now")
        times_out = await client.start(
            sw.waits_for_signal, 0.2, id="wait-times-out", task_queue=QUEUE
        )
        assert await gets.result() == "now"
        assert await times_out.result() == "timed out"
    # the timer of the signal that arrived in time was cancelled
    assert len(of_type(await gets.history(), "TimerCanceled")) == 1


async def test_wait_condition_resumes_on_a_change_or_times_out(client: Client) -> None:
    async with worker(client):
        met = await client.start(sw.waits_for_condition, 30.0, id="cond-met", task_queue=QUEUE)
        await met.signal("set")
        times_out = await client.start(
            sw.waits_for_condition, 0.2, id="cond-times-out", task_queue=QUEUE
        )
        assert await met.result() == "condition met"
        assert await times_out.result() == "timed out"


async def test_signals_to_closed_or_unknown_workflows_are_not_found(client: Client) -> None:
    async with worker(client):
        handle = await client.start(sw.sleeper, 0.01, id="closed-signal", task_queue=QUEUE)
        await handle.result()
    length = len(await handle.history())
    with pytest.raises(WorkflowNotFound, match="already closed"):
        await handle.signal("late")
    with pytest.raises(WorkflowNotFound, match="no-such-workflow"):
        await client.get_handle("no-such-workflow").signal("x")
    assert len(await handle.history()) == length


# ---------------------------------------------------------------- cancellation, termination


async def test_cancel_reaches_the_current_await_cancels_activity_and_child_then_compensates(
    client: Client,
) -> None:
    async with worker(client):
        handle = await client.start(sw.cancellable, "cancel-kid", id="cancel-me", task_queue=QUEUE)
        kid = client.get_handle("cancel-kid")
        await eventually(lambda: activity_started(handle))
        await eventually(lambda: has_event(handle, "ChildWorkflowStarted"))
        await handle.cancel("customer changed their mind")
        assert await handle.result() == "compensated order"  # it chose to return
        with pytest.raises(WorkflowCancelled):
            await kid.result()  # the child did not catch its cancellation
    history = await handle.history()
    assert of_type(history, "WorkflowCancelRequested")[0].reason == "customer changed their mind"
    assert len(of_type(history, "ActivityCancelRequested")) == 1
    assert len(of_type(history, "ExternalCancelInitiated")) == 1
    assert history[-1].type == "WorkflowCompleted"
    assert len(of_type(await kid.history(), "WorkflowCancelRequested")) == 1


async def test_an_uncaught_cancellation_closes_the_run_as_cancelled(client: Client) -> None:
    async with worker(client):
        handle = await client.start(sw.waits_forever, id="cancelled", task_queue=QUEUE)
        await eventually(lambda: has_event(handle, "WorkflowTaskCompleted"))
        await handle.cancel()
        with pytest.raises(WorkflowCancelled):
            await handle.result()
    assert (await handle.history())[-1].type == "WorkflowCanceled"


async def test_terminate_closes_at_once_with_the_reason_and_closed_runs_refuse_more(
    client: Client,
) -> None:
    handle = await client.start(sw.waits_forever, id="terminated", task_queue="no-worker")
    await handle.terminate(reason="stuck in review")
    with pytest.raises(WorkflowTerminated, match="stuck in review"):
        await handle.result()
    history = await handle.history()
    assert history[-1].type == "WorkflowTerminated"
    assert history[-1].attributes.reason == "stuck in review"
    for late in (handle.cancel(), handle.terminate(reason="again"), handle.signal("s")):
        with pytest.raises(WorkflowNotFound, match="already closed \\(terminated\\)"):
            await late
    assert len(await handle.history()) == len(history)


# ---------------------------------------------------------------- the CLI


async def cli(server: Server, *argv: str) -> tuple[int, str, str]:
    """Run ``python -m chronicle ARGV`` against ``server``: (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chronicle",
        "--address",
        f"127.0.0.1:{server.port}",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_signal_cancel_and_terminate(server: Server, client: Client) -> None:
    signalled = await client.start(sw.waits_for_signal, 60.0, id="cli-sig", task_queue=QUEUE)
    assert (await cli(server, "workflow", "signal", "cli-sig", "go", "--input", '"hi"'))[0] == 0
    cancelled = await client.start(sw.waits_forever, id="cli-cancel", task_queue=QUEUE)
    status, _, _ = await cli(server, "workflow", "cancel", "cli-cancel", "--reason", "by CLI")
    assert status == 0
    terminated = await client.start(sw.waits_forever, id="cli-term", task_queue=QUEUE)
    status, _, _ = await cli(server, "workflow", "terminate", "cli-term", "--reason", "done")
    assert status == 0
    async with worker(client):
        assert await signalled.result() == "hi"
        with pytest.raises(WorkflowCancelled):
            await cancelled.result()
    with pytest.raises(WorkflowTerminated, match="done"):
        await terminated.result()
    assert of_type(await cancelled.history(), "WorkflowCancelRequested")[0].reason == "by CLI"
    status, _, err = await cli(server, "workflow", "terminate", "cli-term")
    assert status == 1
    assert "already closed (terminated)" in err
    status, _, err = await cli(server, "workflow", "signal", "cli-sig", "go", "--input", "{oops")
    assert status != 0
    assert "--input" in err or "JSON" in err
