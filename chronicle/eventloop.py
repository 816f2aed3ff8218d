"""Run a program's main coroutine on uvloop when it is installed, else on asyncio's own loop.

uvloop is a dependency on Linux and macOS. With it the server's and the worker's per-call
overhead falls by 10 to 25 % (docs/performance.md). The CLI's server and worker commands and the
benchmarks use :func:`run`. A program that embeds a ``Worker`` or a ``Client`` picks its own
loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``uvloop.new_event_loop`` when uvloop is installed, else None (asyncio's default)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop :func:`loop_factory` picks."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
