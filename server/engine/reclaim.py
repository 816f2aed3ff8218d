"""Taking back tasks started for a caller that never got them, even while Postgres is down.

A write that starts a task for its caller (a poll's dispatch, an eager activity or workflow
task in a completion's answer) may commit while its caller gets no answer: the call was
cancelled, or the database connection broke during the commit, whose outcome the server then
cannot know. Such a task is taken back at once (an activity attempt put back in its queue, a
workflow task timed out: docs/decisions.md 13) rather than after its timeout.

The connection breaking usually means Postgres itself went away, so the statement that takes
the task back fails too. It is then kept here, and one background loop (``Reclaims.run``)
retries what is kept, oldest first, with back-off, until the database answers. Each statement
is idempotent and names the one start it undoes (its time and the caller's identity), so
running it late, or for a write that never committed, changes nothing else. The task's own
timeout remains the last resort: a server that stops before the database is back forgets what
it kept.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from chronicle.server.store.pool import unavailable_cause

Undo = Callable[[], Awaitable[None]]
"""One idempotent statement taking back one start (raises when it cannot run)."""

MAX_KEPT: Final = 10_000
"""Undos kept at most; beyond, the oldest is dropped (its task's timeout still applies)."""
FIRST_DELAY: Final = 0.1
MAX_DELAY: Final = 2.0
"""Seconds between retries while the database stays unavailable (doubling)."""


@dataclass(frozen=True, slots=True)
class _Kept:
    undo: Undo
    what: str
    log: Any


class Reclaims:
    """The undos waiting for the database to come back, and the loop that retries them."""

    def __init__(self) -> None:
        self._kept: deque[_Kept] = deque()
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._kept)

    async def now_or_later(self, undo: Undo, what: str, log: Any) -> None:
        """Run ``undo`` (which takes back ``what``) now; when the database is unavailable, keep
        it for ``run`` to retry. Never raises: another failure is logged, and the task's
        timeout takes it back instead."""
        try:
            await undo()
        except Exception as exc:
            cause = unavailable_cause(exc)
            if cause is None:
                log.warning(f"could not take back {what}; its timeout will", error=str(exc))
                return
            log.warning(
                f"could not take back {what} yet: the database is unavailable; retrying",
                error=str(cause) or type(cause).__name__,
            )
            if len(self._kept) >= MAX_KEPT:
                dropped = self._kept.popleft()
                dropped.log.warning(f"gave up taking back {dropped.what}; its timeout will")
            self._kept.append(_Kept(undo, what, log))
            self._wake.set()

    async def run(self) -> None:
        """Retry the kept undos, oldest first, until each has run (forever; cancel to stop)."""
        delay = FIRST_DELAY
        while True:
            await self._wake.wait()
            while self._kept:
                kept = self._kept[0]
                try:
                    await kept.undo()
                except Exception as exc:
                    if unavailable_cause(exc) is not None:
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, MAX_DELAY)
                        continue
                    kept.log.warning(
                        f"could not take back {kept.what}; its timeout will", error=str(exc)
                    )
                else:
                    kept.log.info(f"took back {kept.what} once the database was back")
                if self._kept and self._kept[0] is kept:
                    self._kept.popleft()
                delay = FIRST_DELAY
            self._wake.clear()
