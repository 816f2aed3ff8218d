"""The README's sample walkthrough, command for command, through the real CLI."""

from __future__ import annotations

import subprocess
import sys

from tests.e2e.processes import REPO_ROOT, ServerProcess, start_worker


def chronicle(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``chronicle ARGS --address <server>`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "chronicle", *args, "--address", server.address],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_order_sample_ships_and_compensates(server: ServerProcess) -> None:
    worker = start_worker(server.address, "samples/order.py", "orders")
    try:
        started = chronicle(
            server,
            "workflow",
            "start",
            "order",
            "--id",
            "order-1",
            "--task-queue",
            "orders",
            "--input",
            '"o-1"',
            "--input",
            "1299",
        )
        assert started.returncode == 0, started.stderr
        result = chronicle(server, "workflow", "result", "order-1")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == '"shipped o-1: TRACK-O-1"'

        chronicle(
            server,
            "workflow",
            "start",
            "order",
            "--id",
            "order-2",
            "--task-queue",
            "orders",
            "--input",
            '"o-2"',
            "--input",
            "1299",
            "--input",
            '"unobtainium"',
        )
        failed = chronicle(server, "workflow", "result", "order-2")
        assert failed.returncode != 0
        assert "unobtainium is out of stock" in failed.stderr
        assert "Traceback" not in failed.stderr
        history = chronicle(server, "workflow", "history", "order-2")
        assert history.returncode == 0, history.stderr
        assert "refund_card" in history.stdout  # the compensation ran and was recorded
        assert "release_stock" not in history.stdout  # nothing was reserved, nothing to release
    finally:
        worker.kill()
    assert "refunded 12.99" in worker.log()
