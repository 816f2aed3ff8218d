"""Sync match: a new run's first workflow task handed to a poller waiting on this server.

Without it, a start commits a task row and a NOTIFY; the waiting poller wakes when Postgres
delivers the notification, then leases the row and starts the task in a second transaction
(2 to 3 ms on this machine). With it, ``StartWorkflow`` takes a poller waiting on the run's
queue *before* its transaction, appends ``WorkflowTaskStarted`` for that poller in the same
commit (no task row, no NOTIFY), and hands the grant to the poll after the commit.

The hand-off never loses a task. Each case below has its own way back:

- **No run was created** (an existing run was used, the start was delayed, or the start
  failed). The poller is given back and goes on waiting.
- **The poll ended while the start committed** (its caller went away), or the start's outcome
  is unknown (it failed or was cancelled during its COMMIT). The task may have been started
  for a poll that will not get it, so its timeout timer is moved to now, and the timer loop
  times it out and schedules a retry (``engine/start.py``). This is what a lost poll response
  does anyway.
- **The poll is cancelled after the hand-off reached it**, before it returned the task: the
  poll moves the timer the same way (``matching/poller.py``).
- **The poll's time is up while it is taken.** It waits for the hand-off instead of
  returning empty: at most ``HANDOFF_WAIT``, and never past its caller's deadline. It is
  offered to no other start meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from chronicle.server.store.notify import Waiter

if TYPE_CHECKING:  # grants imports the engine, which imports the services holding a Handoff
    from chronicle.server.engine.grants import WorkflowTaskGrant

HANDOFF_WAIT: Final = 5.0
"""The longest a poll whose wait is over waits for a hand-off in flight (a start's commit)."""


@dataclass(eq=False)
class WaitingPoller:
    """One workflow-task long poll waiting on this server."""

    identity: str
    waiter: Waiter
    request_id: str = ""
    """The poll's request id, recorded by the ``WorkflowTaskStarted`` a start hands it."""
    taken: bool = False
    """Reserved by a start whose commit is in flight."""
    grant: WorkflowTaskGrant | None = None
    gone: bool = False
    """The poll has ended: nothing handed to it now reaches a worker."""
    offered: bool = True
    """Starts may take it (False once its wait is over: it only awaits a hand-off in flight)."""
    _settled: asyncio.Event = field(default_factory=asyncio.Event)

    async def settled(self, timeout: float) -> WorkflowTaskGrant | None:
        """For a taken poller whose wait is over: the grant once handed, or None if the start
        gave it back or ``timeout`` seconds passed. It is offered to no other start."""
        self.offered = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(timeout, 0.0)):
                await self._settled.wait()
        return self.grant


class Handoff:
    """The workflow-task polls waiting on this server, by (namespace, task queue)."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], list[WaitingPoller]] = {}

    @contextlib.contextmanager
    def waiting(
        self, namespace: str, task_queue: str, identity: str, waiter: Waiter, request_id: str = ""
    ) -> Iterator[WaitingPoller]:
        """Offer a poll for hand-offs while the ``with`` block runs."""
        poller = WaitingPoller(identity, waiter, request_id)
        self._offer(namespace, task_queue, poller)
        try:
            yield poller
        finally:
            poller.gone = True
            self._withdraw(namespace, task_queue, poller)

    def _offer(
        self, namespace: str, task_queue: str, poller: WaitingPoller, first: bool = False
    ) -> None:
        queue = self._waiting.setdefault((namespace, task_queue), [])
        if first:
            queue.insert(0, poller)
        else:
            queue.append(poller)

    def _withdraw(self, namespace: str, task_queue: str, poller: WaitingPoller) -> None:
        queue = self._waiting.get((namespace, task_queue))
        if queue is None:
            return
        with contextlib.suppress(ValueError):
            queue.remove(poller)
        if not queue:
            del self._waiting[(namespace, task_queue)]

    def waiting_on(self, namespace: str, task_queue: str) -> int:
        """How many polls wait on the queue, ready to be handed a task."""
        return len(self._waiting.get((namespace, task_queue), ()))

    def take(self, namespace: str, task_queue: str) -> WaitingPoller | None:
        """Reserve the poller that has waited longest on the queue, if any."""
        queue = self._waiting.get((namespace, task_queue))
        if not queue:
            return None
        poller = queue.pop(0)
        poller.taken = True
        return poller

    def give_back(self, namespace: str, task_queue: str, poller: WaitingPoller) -> None:
        """Nothing was started for ``poller``: it waits on, first in line again, and looks at
        the queue once more (a task may have come meanwhile)."""
        poller.taken = False
        poller._settled.set()
        poller._settled = asyncio.Event()
        if not poller.gone and poller.offered:
            self._offer(namespace, task_queue, poller, first=True)
            poller.waiter.set()

    def pause(self, namespace: str, task_queue: str, poller: WaitingPoller) -> None:
        """Withdraw ``poller`` while it leases a task itself (it must not get two)."""
        self._withdraw(namespace, task_queue, poller)

    def resume(self, namespace: str, task_queue: str, poller: WaitingPoller) -> None:
        """Offer ``poller`` again after a look at the queue that found nothing."""
        if not poller.gone and not poller.taken and poller.offered:
            self._offer(namespace, task_queue, poller)

    @staticmethod
    def deliver(poller: WaitingPoller, grant: WorkflowTaskGrant) -> bool:
        """Hand ``grant`` to ``poller``; False when its poll has ended (nobody will get it)."""
        if poller.gone:
            return False
        poller.grant = grant
        poller._settled.set()
        poller.waiter.set()
        return True
