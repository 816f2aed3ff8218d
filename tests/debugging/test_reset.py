"""`chronicle workflow reset`: rerun a failed run from its last good workflow task after a code
fix; bad reset points are clear errors and change nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chronicle.history import events as ev
from chronicle.sdk._grpc import InvalidArgumentError
from chronicle.sdk.activity import activity
from chronicle.sdk.client import Client
from chronicle.sdk.errors import ApplicationError, WorkflowFailed
from chronicle.sdk.worker import Worker
from chronicle.sdk.workflow import workflow
from chronicle.server import errors
from chronicle.server.app import Server
from chronicle.server.engine.reset import cut_point, last_good_point
from tests.debugging.cli_process import run_cli
from tests.sdk_io.helpers import eventually

CALLS: list[int] = []


@activity(start_to_close_timeout=timedelta(seconds=10))
async def double(x: int) -> int:
    CALLS.append(x)
    return 2 * x


@workflow(name="checkout")
async def checkout_buggy(x: int) -> int:
    a = await double(x)
    b = await double(a)
    if b > 4:
        raise ApplicationError(f"bug: {b} is too big", non_retryable=True)
    return b


@workflow(name="checkout")
async def checkout_fixed(x: int) -> int:
    a = await double(x)
    b = await double(a)
    return a + b


@workflow(name="checkout")
async def checkout_waiting(x: int) -> int:
    a = await double(x)
    extra = await workflow.wait_signal("extra")
    return a + int(extra)


async def test_reset_of_a_failed_run_completes_after_a_code_fix(
    server: Server, client: Client
) -> None:
    CALLS.clear()
    async with Worker(client, task_queue="reset", workflows=[checkout_buggy], activities=[double]):
        handle = await client.start(checkout_buggy, 3, id="checkout-1", task_queue="reset")
        with pytest.raises(WorkflowFailed):
            await handle.result()
    old = await handle.history()
    assert old[-1].type == "WorkflowFailed"
    # the task completed at event 9 scheduled double(6); the task after it failed the workflow
    assert [e.id for e in old if e.type == "WorkflowTaskCompleted"] == [4, 9, 14]
    assert last_good_point(old) == 9

    status, out, err = await run_cli(
        "--address",
        f"127.0.0.1:{server.port}",
        "workflow",
        "reset",
        "checkout-1",
        "--to",
        "last-good",
    )
    assert status == 0, err
    new_run = out.strip()
    assert new_run
    assert new_run != handle.run_id
    # the start handle follows its chain, which the reset run carries on: it describes that run
    assert (await handle.describe()).run_id == new_run
    old_description = await client.get_handle("checkout-1", run_id=handle.run_id).describe()
    assert old_description.status == "failed"  # closed runs stay as they were, linked:
    assert old_description.reset_to_run_id == new_run
    new_description = await client.get_handle("checkout-1", run_id=new_run).describe()
    assert (new_description.reset_from_run_id, new_description.reset_event_id) == (
        handle.run_id,
        9,
    )

    async with Worker(client, task_queue="reset", workflows=[checkout_fixed], activities=[double]):
        assert await client.get_handle("checkout-1").result() == 6 + 12
    assert CALLS == [3, 6, 6]  # double(3) is kept from the old run; double(6) runs again

    new = await client.get_handle("checkout-1", run_id=new_run).history()
    assert [(e.id, e.type, e.time) for e in new[:10]] == [(e.id, e.type, e.time) for e in old[:10]]
    assert new[-1].type == "WorkflowCompleted"
    assert await client.get_handle("checkout-1", run_id=handle.run_id).history() == old


async def test_reset_of_a_running_workflow_terminates_it_and_can_reapply_signals(
    server: Server, client: Client
) -> None:
    async with Worker(
        client, task_queue="reset", workflows=[checkout_waiting], activities=[double]
    ):
        handle = await client.start(checkout_waiting, 1, id="checkout-2", task_queue="reset")

        async def waiting() -> bool | None:
            done = [e for e in await handle.history() if e.type == "WorkflowTaskCompleted"]
            return True if len(done) >= 2 else None

        await eventually(waiting)
        await handle.signal("extra", 40)
        assert await handle.result() == 42
    # a closed run's last task closed it: reset to the first task (before the activity result)
    events = await handle.history()
    with pytest.raises(InvalidArgumentError, match="closed the run"):
        await handle.reset(events[-2].id)
    first_task = next(e.id for e in events if e.type == "WorkflowTaskCompleted")
    signal_id = next(e.id for e in events if e.type == "SignalReceived")
    assert signal_id > first_task + 1  # the signal came after the reset point
    new = await handle.reset(first_task, reapply_signals=True, reason="rerun")
    newest = await new.reset(first_task, reapply_signals=True)  # `new` is open: terminated
    assert (await new.describe()).status == "terminated"
    closing = (await new.history())[-1].attributes
    assert isinstance(closing, ev.WorkflowTerminated)
    assert closing.reason == f"reset: reset to event {first_task}, continued in run {newest.run_id}"
    async with Worker(
        client, task_queue="reset", workflows=[checkout_waiting], activities=[double]
    ):
        assert await newest.result() == 42
    history = await newest.history()
    signals = [e.attributes for e in history if isinstance(e.attributes, ev.SignalReceived)]
    assert [s.signal_name for s in signals] == ["extra"]


async def test_bad_reset_points_are_clear_errors_and_change_nothing(
    server: Server, client: Client
) -> None:
    async with Worker(client, task_queue="reset", workflows=[checkout_buggy], activities=[double]):
        handle = await client.start(checkout_buggy, 1, id="checkout-3", task_queue="reset")
        assert await handle.result() == 4
    before = await handle.history()
    address = f"127.0.0.1:{server.port}"
    cases = {
        "999": "event 999 does not exist: the run has events 1 to 15",
        "5": "event 5 is a ActivityScheduled, not a workflow-task boundary: reset points are "
        "WorkflowTaskCompleted events (4, 9, 14)",
    }
    for event_id, message in cases.items():
        status, _, err = await run_cli(
            "--address", address, "workflow", "reset", "checkout-3", "--event-id", event_id
        )
        assert status == 1
        assert message in err
        assert "Traceback" not in err
    status, _, err = await run_cli(
        "--address", address, "workflow", "reset", "checkout-3", "--to", "last-good"
    )
    assert status == 1
    assert "the run has no failure" in err
    status, _, err = await run_cli("--address", address, "workflow", "reset", "checkout-3")
    assert status == 2
    assert (await handle.history()) == before
    [run] = [r async for r in client.list("type = 'checkout'")]
    assert run.run_id == handle.run_id  # no new run was started


def test_reset_points_are_pure_functions_of_the_history() -> None:
    from tests.sdk.sdk_histories import Sim

    sim = Sim(checkout_buggy, 1)
    sim.step()
    sim.activity_completed(1, 2)
    sim.step()
    events = sim.events
    completed = [e.id for e in events if isinstance(e.attributes, ev.WorkflowTaskCompleted)]
    first = completed[0]
    assert cut_point(events, first) == first + 1  # the task's ActivityScheduled is kept
    with pytest.raises(errors.InvalidArgument, match="not a workflow-task boundary"):
        cut_point(events, 1)
    with pytest.raises(errors.InvalidArgument, match="has no failure"):
        last_good_point(events)
