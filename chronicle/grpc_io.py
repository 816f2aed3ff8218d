"""Which I/O engine gRPC's core uses in Chronicle's own processes.

Since grpcio 1.80, gRPC's core does a Python process's socket I/O on its EventEngine threads,
which hand each message on to the thread that polls the completion queue and from there to the
asyncio loop. The poll-based I/O it used before does the I/O on the polling thread itself. A
Chronicle step is one small message each way on an open stream, and there the older engine
costs about half: a message pair 136 against 241 µs, and about 100 against 150 µs of CPU on
each side (``python -m bench.call_cost``); W3 takes 5 to 15 % less time (docs/performance.md,
item 20).

gRPC reads ``GRPC_EXPERIMENTS`` once, when it is imported, and importing any ``chronicle``
module imports it. So ``use_polling_io`` sets the variable and runs the same command again
(``exec``: same process id, same open files), which then starts with poll-based I/O. The
long-running commands call it first thing: ``python -m chronicle.server``, ``chronicle server
start|start-dev``, ``chronicle worker`` and the benchmarks; their subprocesses inherit the
variable. A program that embeds a ``Worker`` or a ``Client`` keeps gRPC's default unless its
environment sets the variable. Setting ``GRPC_EXPERIMENTS`` (even to an empty value) leaves
the choice to the environment: nothing is re-run. gRPC plans to remove these experiments in a
later release; then the variable names unknown experiments, which gRPC logs once per process,
and nothing else changes (``tests/test_grpc_io.py`` fails first, as a reminder).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
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
    """The installed grpcio's version as numbers, e.g. ``(1, 85, 1)`` (read without importing
    grpc); ``()`` when its package metadata is missing (a vendored or frozen build)."""
    try:
        version = importlib.metadata.version("grpcio")
    except importlib.metadata.PackageNotFoundError:
        return ()
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def polling_io_environment(environ: MutableMapping[str, str]) -> bool:
    """Set ``GRPC_EXPERIMENTS`` in ``environ`` to poll-based I/O; True when it did. Does
    nothing when the variable is already set, or when the installed grpcio predates EventEngine
    by default (poll-based I/O is its default then)."""
    if "GRPC_EXPERIMENTS" in environ or grpc_version() < EVENT_ENGINE_DEFAULT_SINCE:
        return False
    environ["GRPC_EXPERIMENTS"] = ",".join(POLLING_IO_EXPERIMENTS)
    return True


def use_polling_io() -> None:
    """Make this process use gRPC's poll-based I/O (see the module docstring): when the
    environment does not choose, set ``GRPC_EXPERIMENTS`` and run this same command again in
    this process (``os.execv``; it does not return then). Call it first thing in a command's
    entry point, before it reads input or loads user code. Not on Windows, where ``exec``
    starts a new process, nor when the command line cannot be run again as it was: a program
    read from standard input (``python -``, already consumed), or ``sys.argv`` rewritten by a
    host program (the original command line would run the host again)."""
    argv = sys.argv
    rerunnable = (
        argv[:1] != ["-"] and sys.orig_argv[len(sys.orig_argv) - len(argv) + 1 :] == argv[1:]
    )
    if os.name != "posix" or not rerunnable or not polling_io_environment(os.environ):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)
