"""Queries: routed in memory from ``QueryWorkflow`` to a worker polling the run's task queue.

A query writes nothing. It waits in a per-queue list of this process until a workflow-task
poller takes it (as a query-only task: ``query`` set, no events; the worker answers from its
cache or by replaying the history) and answers with ``RespondQueryTask``. Only pollers
connected to the same server process see the query (a gap once several replicas run).

The validation of an update (``validate_update``) travels the same way: it is a read-only
question to the workflow's code, like a query.

A query handed to a worker that is then lost (its ``WorkerSession`` ended: killed, cut off,
stopped) goes back to the front of its queue at once (``release_worker``) and the next poller
takes it, as a workflow task handed to a poll that ended is retried at once
(docs/decisions.md §13). Any answer counts while the query waits, also a late one from the
worker it was taken from. Each hand-off is numbered, so a release meant for one hand-off never
undoes a later one.

Two bounded waits: a query no poller takes within ``pickup_timeout`` fails with
``FailedPrecondition`` ("no worker is polling task queue …"); one not answered within
``timeout`` (re-offered ones included: another worker may be on its way) fails with
``DeadlineExceeded``, naming the lost workers it was taken from.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from dataclasses import dataclass, field

from chronicle.history.values import Failure, Payload
from chronicle.server import errors, telemetry
from chronicle.server.engine import tasks as rows
from chronicle.server.store import notify
from chronicle.server.store.rows import RunKey


@dataclass(slots=True, kw_only=True)
class QueryTask:
    """One query waiting for (or being answered by) a worker."""

    key: RunKey
    workflow_type: str
    task_queue: str
    name: str
    args: tuple[Payload, ...]
    validate_update: bool = False
    query_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    answer: asyncio.Future[tuple[Payload | None, Failure | None]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    taker: str | None = None
    """The identity of the poll that holds the query now; None while it waits in the queue."""
    hand_offs: int = 0
    """How many times a poll took it (the number of the current hand-off)."""
    lost: list[str] = field(default_factory=list)
    """Why earlier hand-offs were undone, for the error when nobody answers."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set whenever the query is taken, given back or answered."""

    def describe(self) -> str:
        """``query 'x'`` or ``update 'x'`` of the workflow, for messages."""
        what = "update" if self.validate_update else "query"
        return f"{what} '{self.name}' of workflow '{self.key.workflow_id}'"

    def token(self) -> bytes:
        """The opaque task token of this query task."""
        return json.dumps({"t": "query", "id": self.query_id}).encode()


class QueryRouter:
    """The in-process queues of pending queries."""

    def __init__(self, notifier: notify.Notifier) -> None:
        self._notifier = notifier
        self._queues: dict[tuple[str, str], deque[QueryTask]] = {}
        self._pending: dict[str, QueryTask] = {}
        """Every query asked and not finished, waiting or taken, by id."""

    async def ask(
        self, query: QueryTask, timeout: float, pickup_timeout: float | None = None
    ) -> tuple[Payload | None, Failure | None]:
        """Queue ``query`` and wait up to ``timeout`` s for a worker's answer (see the module
        docstring for the two errors)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pickup = min(timeout, pickup_timeout) if pickup_timeout is not None else timeout
        picked_up_by = loop.time() + pickup
        self._pending[query.query_id] = query
        self._offer(query)
        try:
            while not query.answer.done():
                # Never taken: the pickup wait. Taken, or handed to a worker that was lost
                # (another may be starting): up to the deadline.
                first_pickup = query.hand_offs == 0
                until = picked_up_by if first_pickup else deadline
                query.changed.clear()
                try:
                    async with asyncio.timeout_at(until):
                        await query.changed.wait()
                except TimeoutError:
                    raise self._timed_out(query, timeout, pickup, first_pickup) from None
            return query.answer.result()
        finally:
            self._pending.pop(query.query_id, None)
            self._withdraw(query)

    def take(self, namespace: str, task_queue: str, identity: str = "") -> QueryTask | None:
        """The oldest query waiting on the queue, now handed to the poller ``identity``."""
        waiting = self._queues.get((namespace, task_queue))
        while waiting:
            query = waiting.popleft()
            if not query.answer.done():
                query.taker = identity
                query.hand_offs += 1
                query.changed.set()
                return query
        return None

    def release(self, query: QueryTask, hand_off: int, reason: str) -> bool:
        """Undo hand-off number ``hand_off`` of ``query``: nobody will answer it (``reason``).
        It goes back to the front of its queue and waiting pollers wake. False when there is
        nothing to undo (answered, finished, or taken again since)."""
        if (
            query.answer.done()
            or query.taker is None
            or query.hand_offs != hand_off
            or self._pending.get(query.query_id) is not query
        ):
            return False
        taker, query.taker = query.taker, None
        query.lost.append(f"worker '{taker}': {reason}")
        self._offer(query, first=True)
        query.changed.set()
        telemetry.run_logger(*query.key.params()).info(
            "query task given back: the worker it was handed to will not answer",
            query=query.describe(),
            taker=taker,
            reason=reason,
            hand_off=hand_off,
        )
        return True

    def release_worker(self, namespace: str, identity: str, reason: str) -> int:
        """Give back every query of ``namespace`` handed to the worker ``identity`` (its session
        ended); how many."""
        held = [
            query
            for query in self._pending.values()
            if query.taker == identity and query.key.namespace == namespace
        ]
        return sum(self.release(query, query.hand_offs, reason) for query in held)

    def respond(self, token: bytes, result: Payload | None, failure: Failure | None) -> None:
        """Deliver a worker's answer; ``NotFound`` when the query is gone (answered, timed
        out). A query handed out again still takes the first answer, from either worker."""
        try:
            data = json.loads(token)
        except ValueError:
            data = None
        if not isinstance(data, dict) or data.get("t") != "query":
            raise errors.InvalidArgument("task_token is malformed", field="task_token")
        query = self._pending.get(str(data.get("id")))
        if query is None or query.answer.done():
            raise errors.NotFound("query task not found: it timed out or was already answered")
        query.answer.set_result((result, failure))
        query.changed.set()

    def _offer(self, query: QueryTask, first: bool = False) -> None:
        """Queue ``query`` (at the front when ``first``) and wake this process's pollers."""
        waiting = self._queues.setdefault((query.key.namespace, query.task_queue), deque())
        if first:
            waiting.appendleft(query)
        else:
            waiting.append(query)
        self._notifier.wake(
            notify.TASK_CHANNEL,
            notify.task_key(rows.WORKFLOW, query.key.namespace, query.task_queue),
        )

    def _withdraw(self, query: QueryTask) -> None:
        queue_key = (query.key.namespace, query.task_queue)
        waiting = self._queues.get(queue_key)
        if waiting is None:
            return
        if query in waiting:
            waiting.remove(query)
        if not waiting:
            del self._queues[queue_key]

    @staticmethod
    def _timed_out(
        query: QueryTask, timeout: float, pickup: float, first_pickup: bool
    ) -> errors.ServerError:
        """The error of a query nobody answered in time."""
        where = f"task queue '{query.task_queue}'"
        if first_pickup and pickup < timeout:
            return errors.FailedPrecondition(
                f"no worker is polling {where} (namespace '{query.key.namespace}'): "
                f"{query.describe()} was not picked up within {pickup:.1f}s"
            )
        message = f"no worker answered {query.describe()} ({where}) within {timeout:.1f}s"
        if query.lost:
            message += f"; it was handed to workers that were lost ({'; '.join(query.lost)})"
            if query.taker is None:
                message += " and no other worker took it since"
        return errors.DeadlineExceeded(message)
