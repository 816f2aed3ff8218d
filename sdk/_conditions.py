"""``workflow.wait_condition``: waits on predicates of workflow state, checked when the loop idles.

The loop calls ``check`` each time it runs out of ready callbacks; a predicate that holds (or
raises: the error goes to the waiting code) resolves its wait, and the loop runs on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

__all__ = ["Conditions"]


class Conditions:
    """The pending ``wait_condition`` calls of one workflow instance."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    async def wait(self, predicate: Callable[[], bool], timeout: timedelta | None) -> None:
        """Resume when ``predicate()`` holds (checked whenever the loop goes idle)."""
        if predicate():
            return
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiting.append((predicate, future))
        if timeout is None:
            await future
            return
        async with asyncio.timeout(timeout.total_seconds()):
            await future

    def check(self) -> bool:
        """Resolve the waits whose predicate holds now (or raised); True if any did."""
        progressed = False
        for predicate, future in list(self._waiting):
            if future.done():
                continue
            try:
                if predicate():
                    future.set_result(None)
                    progressed = True
            except Exception as exc:  # delivered to the waiting code
                future.set_exception(exc)
                progressed = True
        self._waiting = [(p, f) for p, f in self._waiting if not f.done()]
        return progressed
