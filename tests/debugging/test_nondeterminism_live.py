"""A worker running changed code against a running workflow: the NondeterminismError fails the
workflow *task* (never the workflow), `describe` and the CLI show it with both call sites, and a
worker with fixed code carries the run on to completion."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from chronicle.sdk.client import Client
from chronicle.server.app import Server
from tests.debugging.cli_process import run_cli
from tests.e2e.processes import ManagedProcess
from tests.sdk_io.helpers import eventually

V1 = """
from datetime import timedelta
from chronicle import activity, workflow

@activity(start_to_close_timeout=timedelta(seconds=10))
async def charge_card(order: str) -> str:
    return "receipt-" + order

@activity(start_to_close_timeout=timedelta(seconds=10))
async def ship(order: str) -> str:
    return "shipped-" + order

@workflow
async def billing(order: str) -> str:
    receipt = await charge_card(order)  # RECORDED
    await workflow.wait_signal("approve")
    return receipt + "/" + await ship(order)
"""

V2_BROKEN = V1.replace(
    "    receipt = await charge_card(order)  # RECORDED\n",
    "    # v2: give the fraud check time first\n"
    "    await workflow.sleep(timedelta(seconds=5))  # ATTEMPTED\n"
    "    receipt = await charge_card(order)\n",
)


def _line(source: str, marker: str) -> int:
    return 1 + source.splitlines().index(
        next(line for line in source.splitlines() if f"# {marker}" in line)
    )


def _worker(module: Path, address: str) -> ManagedProcess:
    argv = [sys.executable, "-m", "chronicle", "worker", str(module), "--task-queue", "billing"]
    return ManagedProcess(module.stem, [*argv, "--address", address]).start()


async def _stop(worker: ManagedProcess) -> None:
    await asyncio.to_thread(worker.terminate)


async def test_changed_code_fails_the_task_not_the_workflow_and_a_fix_carries_it_on(
    server: Server, client: Client, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{server.port}"
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    v1 = tmp_path / "v1" / "billing.py"
    v1.write_text(V1)
    v2 = tmp_path / "v2" / "billing.py"
    v2.write_text(V2_BROKEN)

    worker = _worker(v1, address)
    try:
        handle = await client.start("billing", "o-7", id="billing-7", task_queue="billing")

        async def waiting_for_approval() -> bool | None:
            events = await handle.history()
            return True if events[-1].type == "WorkflowTaskCompleted" and len(events) > 5 else None

        await eventually(waiting_for_approval, timeout=30)
    finally:
        await _stop(worker)

    worker = _worker(v2, address)
    try:
        await handle.signal("approve")

        async def task_failing() -> object | None:
            description = await handle.describe()
            return description if description.last_workflow_task_failure is not None else None

        description = await eventually(task_failing, timeout=30)
    finally:
        await _stop(worker)

    assert description.status == "running"  # the workflow did not fail: only its task
    failure = description.last_workflow_task_failure
    assert failure is not None
    assert failure.type == "NondeterminismError"
    recorded = f"as event 5 at billing.py:{_line(V1, 'RECORDED')} in billing"
    attempted = f"StartTimer(seq=1) at billing.py:{_line(V2_BROKEN, 'ATTEMPTED')} in billing"
    assert _line(V1, "RECORDED") != _line(V2_BROKEN, "ATTEMPTED")
    assert "workflow 'billing-7'" in failure.message
    assert f"(run {handle.run_id}" in failure.message
    assert "ActivityScheduled(activity_type='charge_card', seq=1) as event 5" in failure.message
    assert recorded in failure.message
    assert attempted in failure.message

    status, out, err = await run_cli("--address", address, "workflow", "describe", "billing-7")
    assert status == 0, err
    assert "status:          running" in out
    assert "cause nondeterminism" in out
    assert attempted in out
    status, out, err = await run_cli("--address", address, "workflow", "history", "billing-7")
    assert status == 0, err
    failed = next(line for line in out.splitlines() if "WorkflowTaskFailed" in line)
    assert "cause=nondeterminism  NondeterminismError: workflow 'billing-7'" in failed

    worker = _worker(v1, address)  # the fix: the code the run was recorded with
    try:
        async with asyncio.timeout(60):
            assert await handle.result() == "receipt-o-7/shipped-o-7"
    finally:
        await _stop(worker)
    types = [e.type for e in await handle.history()]
    assert "WorkflowTaskFailed" in types
    assert types[-1] == "WorkflowCompleted"


LOCAL_V1 = """
from datetime import timedelta
from chronicle import activity, workflow

@activity(start_to_close_timeout=timedelta(seconds=10))
async def charge_card(order: str) -> str:
    return "receipt-" + order

@activity(start_to_close_timeout=timedelta(seconds=10))
async def authorize_card(order: str) -> str:
    return "auth-" + order

@workflow
async def billing(order: str) -> str:
    receipt = await workflow.execute_local_activity(charge_card, order)  # RECORDED
    await workflow.wait_signal("approve")
    return receipt
"""

LOCAL_V2_SWAPPED = LOCAL_V1.replace(
    "local_activity(charge_card, order)  # RECORDED",
    "local_activity(authorize_card, order)  # ATTEMPTED",
)


async def test_a_swapped_local_activity_fails_the_next_task_naming_both_types(
    server: Server, client: Client, tmp_path: Path
) -> None:
    """A worker replaying (cache miss) code that calls another local activity where the run
    recorded one fails the task with a NondeterminismError, as for a regular activity."""
    address = f"127.0.0.1:{server.port}"
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    v1 = tmp_path / "v1" / "billing.py"
    v1.write_text(LOCAL_V1)
    v2 = tmp_path / "v2" / "billing.py"
    v2.write_text(LOCAL_V2_SWAPPED)

    worker = _worker(v1, address)
    try:
        handle = await client.start("billing", "o-8", id="billing-8", task_queue="billing")

        async def local_activity_recorded() -> bool | None:
            types = [e.type for e in await handle.history()]
            return True if "MarkerRecorded" in types else None  # with its task's completion

        await eventually(local_activity_recorded, timeout=30)
    finally:
        await _stop(worker)
    [marker] = [e for e in await handle.history() if e.type == "MarkerRecorded"]
    assert marker.id == 5

    worker = _worker(v2, address)  # a new process: no cached instance, it replays
    try:
        await handle.signal("approve")

        async def task_failing() -> object | None:
            description = await handle.describe()
            return description if description.last_workflow_task_failure is not None else None

        description = await eventually(task_failing, timeout=30)
    finally:
        await _stop(worker)

    assert description.status == "running"
    failure = description.last_workflow_task_failure
    assert failure is not None
    assert failure.type == "NondeterminismError"
    assert "workflow 'billing-8'" in failure.message
    assert (
        "the history recorded MarkerRecorded(activity_type='charge_card', "
        "marker_name='local_activity', seq=1) as event 5 "
        f"at billing.py:{_line(LOCAL_V1, 'RECORDED')} in billing"
    ) in failure.message
    assert (
        "the code attempted RecordMarker(activity_type='authorize_card', "
        "marker_name='local_activity', seq=1) "
        f"at billing.py:{_line(LOCAL_V2_SWAPPED, 'ATTEMPTED')} in billing"
    ) in failure.message
    failed = [e for e in await handle.history() if e.type == "WorkflowTaskFailed"]
    assert failed
    assert failed[-1].attributes.cause.value == "nondeterminism"
