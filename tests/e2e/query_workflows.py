"""A workflow with a query, served by the end-to-end tests' worker subprocesses.

A worker started with ``CHRONICLE_TEST_QUERY_STALL`` set to a file path stalls in the query
handler after creating that file, so a test can kill it while it holds the query.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from chronicle import workflow

STALL_ENV = "CHRONICLE_TEST_QUERY_STALL"


def _stall_if_asked() -> None:
    """Outside workflow code: mark the file named by ``STALL_ENV`` and block (60 s at most)."""
    marker = os.environ.get(STALL_ENV)
    if marker:
        Path(marker).write_text("taken")
        threading.Event().wait(60)


@workflow
async def watched() -> str:
    """Waits for signal ``finish``; query ``peek`` answers how it is doing."""
    finished = [False]

    def finish() -> None:
        finished[0] = True

    def peek() -> str:
        _stall_if_asked()
        return "finished" if finished[0] else "waiting"

    workflow.on_signal("finish", finish)
    workflow.on_query("peek", peek)
    await workflow.wait_condition(lambda: finished[0])
    return "done"
