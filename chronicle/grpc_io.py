"""Which I/O engine gRPC's core uses in Chronicle's own processes.

Since grpcio 1.80, gRPC's core does a Python process's socket I/O on its EventEngine threads,
which hand each message on to the thread that polls the completion queue and from there to the
asyncio loop. The poll-based I/O it used before does the I/O on the polling thread itself. A
Chronicle step is one small message each way on an open stream, and there the older engine
costs about half: a message pair 137 against 275 µs, and about 100 against 175 µs of CPU on
each side (``python -m bench.call_cost``); W3 takes 1.7 to 1.8 s instead of 2.0 s
(docs/performance.md, item 20).

``prefer_polling_io`` turns EventEngine's experiments off for the process it runs in, through
``GRPC_EXPERIMENTS``. The server (``python -m chronicle.server``), the ``chronicle`` command
(``chronicle worker``, ``chronicle server start-dev``) and the benchmarks call it first thing;
their subprocesses inherit it. A program that embeds a ``Worker`` or a ``Client`` keeps
gRPC's default unless it calls this itself, before it creates its first channel or server.
Setting ``GRPC_EXPERIMENTS`` (even to an empty value) leaves the choice to the environment.
gRPC plans to remove these experiments in a later release; then the variable names unknown
experiments, which gRPC logs once, and nothing else changes (``tests/test_grpc_io.py`` fails
first, as a reminder).
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from typing import Final

POLLING_IO_EXPERIMENTS: Final = (
    "-event_engine_client",
    "-event_engine_listener",
    "-event_engine_for_all_other_endpoints",
    "-event_engine_callback_cq",
)
"""The ``GRPC_EXPERIMENTS`` entries that turn EventEngine off (the ``-`` means "disable")."""

EVENT_ENGINE_DEFAULT_SINCE: Final = (1, 80)
"""The grpcio release that made EventEngine the default for Python."""


def grpc_version() -> tuple[int, ...]:
    """The installed grpcio's version as numbers, e.g. ``(1, 85, 1)``."""
    import grpc

    return tuple(int(part) for part in re.findall(r"\d+", grpc.__version__)[:3])


def prefer_polling_io(environ: MutableMapping[str, str] | None = None) -> bool:
    """Make this process's gRPC use poll-based I/O (see the module docstring); True when it set
    ``GRPC_EXPERIMENTS``. Call it before the process creates its first gRPC channel or server.

    Does nothing when ``GRPC_EXPERIMENTS`` is already set, or when the installed grpcio
    predates EventEngine by default (poll-based I/O is its default then)."""
    env = os.environ if environ is None else environ
    if "GRPC_EXPERIMENTS" in env or grpc_version() < EVENT_ENGINE_DEFAULT_SINCE:
        return False
    env["GRPC_EXPERIMENTS"] = ",".join(POLLING_IO_EXPERIMENTS)
    return True
