"""A run's outcome, and the closes this server wrote, so its result waiters need no read.

A completion that closes its run registers the close here before its write (``closing``) and
publishes the run's outcome once the write has committed. A ``GetWorkflowResult`` long poll on
this server asks here before it reads the run: a close in flight is waited for (Postgres's
NOTIFY often arrives in the same loop turn as the write's own answer, before the completion
resumes), a close published lately is answered at once (the completion's own wake runs its
waiters after it has left ``closing``). The waiter reads the run only when no close of it is
known here, or the one in flight did not close it (a stale task, unhandled events: nothing is
published).

Safe because a closed run never changes: its close event and status, once committed, are the
answer every later read would give. Published outcomes are kept ``MAX_AGE`` seconds, at most
``MAX_ENTRIES`` of them (the oldest go first): long enough for the waiters already woken, and no
memory a result asked for later needs (it reads the run).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from chronicle.history import events as ev
from chronicle.history.state import RunStatus
from chronicle.server.store.rows import RunKey

MAX_AGE: Final = 10.0
MAX_ENTRIES: Final = 10_000


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """A run's status and, once it is closed, its close event's attributes."""

    status: str
    new_run_id: str | None
    """The next run of a run that continued as new (or is retried)."""
    close: ev.EventAttributes | None

    @property
    def running(self) -> bool:
        """Whether the run is still open."""
        return self.status == RunStatus.RUNNING.value


class Closes:
    """The closing completions this server is writing or wrote lately, by run (one process's
    memory)."""

    def __init__(self) -> None:
        self._pending: dict[RunKey, asyncio.Future[RunOutcome | None]] = {}
        self._closed: OrderedDict[RunKey, tuple[RunOutcome, float]] = OrderedDict()

    @contextlib.contextmanager
    def closing(self, key: RunKey) -> Iterator[Callable[[RunOutcome], None]]:
        """Register a close of ``key`` for the ``with`` block; yields the function that
        publishes the committed outcome. Leaving the block without publishing tells the
        waiters to read the run themselves."""
        if key in self._pending:  # a racing completion of the same run: the first one answers
            yield lambda _outcome: None
            return
        future: asyncio.Future[RunOutcome | None] = asyncio.get_running_loop().create_future()
        self._pending[key] = future

        def publish(outcome: RunOutcome) -> None:
            if not future.done():
                future.set_result(outcome)
                self._remember(key, outcome)

        try:
            yield publish
        finally:
            if self._pending.get(key) is future:
                del self._pending[key]
            if not future.done():
                future.set_result(None)

    async def outcome(self, key: RunKey) -> RunOutcome | None:
        """The outcome of a close of ``key`` published lately, or in flight here once it has
        committed; None when no close is known here or it did not close the run."""
        future = self._pending.get(key)
        if future is not None:
            return await asyncio.shield(future)
        closed = self._closed.get(key)
        if closed is None or time.monotonic() - closed[1] > MAX_AGE:
            return None
        return closed[0]

    def _remember(self, key: RunKey, outcome: RunOutcome) -> None:
        self._closed[key] = (outcome, time.monotonic())
        self._closed.move_to_end(key)
        while len(self._closed) > MAX_ENTRIES:
            self._closed.popitem(last=False)
