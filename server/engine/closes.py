"""A run's outcome, and the closes this server is writing, so its result waiters need no read.

A completion that closes its run registers the close here before its write (``closing``) and
publishes the run's outcome once the write has committed. A ``GetWorkflowResult`` long poll on
this server that is woken for that run (by the completion itself, or by Postgres's NOTIFY, which
often arrives in the same loop turn as the write's own answer, before the completion resumes)
first waits for the close in flight, and reads the run only when the close did not happen here
or did not close the run (a stale task, unhandled events: the completion publishes nothing).

Safe because a closed run never changes: its close event and status, once committed, are the
answer every later read would give. The registration lasts only while its completion runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from chronicle.history import events as ev
from chronicle.history.state import RunStatus
from chronicle.server.store.rows import RunKey


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


class ClosesInFlight:
    """The closing completions this server is writing, by run (one process's memory)."""

    def __init__(self) -> None:
        self._pending: dict[RunKey, asyncio.Future[RunOutcome | None]] = {}

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

        try:
            yield publish
        finally:
            if self._pending.get(key) is future:
                del self._pending[key]
            if not future.done():
                future.set_result(None)

    async def outcome(self, key: RunKey) -> RunOutcome | None:
        """The outcome of a close of ``key`` in flight here, once it has committed; None when
        no close is in flight or it did not close the run."""
        future = self._pending.get(key)
        if future is None:
            return None
        return await asyncio.shield(future)
