"""Queries: routed from ``QueryWorkflow`` to a worker polling the run's task queue, on any replica.

A query writes no history. It waits in a per-queue list of this process until a workflow-task
poller takes it (as a query-only task: ``query`` set, no events; the worker answers from its
cache or by replaying the history) and answers with ``RespondQueryTask``. That list is the
fast path, for pollers of this process. A query that no poller here takes at once (none was
waiting on its queue when it was offered, or one was but did not take it within
``PUBLISH_DELAY``) is *published*: written to ``pending_queries`` and announced, so a poller
on any replica claims it (``remote_queries.py``). From then on it leaves the list for good and
its row decides who holds it (local and remote pollers alike claim it there, so no hand-off
goes to two polls), and answers go through the row (the first one wins). This process, its
origin, follows the row through ``chronicle_query`` notifications and deletes it at the end.

The validation of an update (``validate_update``) travels the same way: it is a read-only
question to the workflow's code, like a query.

A query handed to a worker that is then lost (its ``WorkerSession`` ended: killed, cut off,
stopped) goes back at once (``release_worker``, on the process that holds the session: to the
front of this process's list, or claimable again in its row) and the next poller takes it,
as a workflow task handed to a poll that ended is retried at once (docs/decisions.md §13).
Any answer counts while the query waits, also a late one from the worker it was taken from.
Each hand-off is numbered, so a release meant for one hand-off never undoes a later one.

Two bounded waits: a query no poller takes within ``pickup_timeout`` fails with
``FailedPrecondition`` ("no worker is polling task queue …"); one not answered within
``timeout`` (re-offered ones included: another worker may be on its way) fails with
``DeadlineExceeded``, naming the lost workers it was taken from.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import TypeAlias

from chronicle.history.values import Failure, Payload
from chronicle.server import errors, telemetry
from chronicle.server.engine import tasks as rows
from chronicle.server.matching.remote_queries import (
    ClaimedQuery,
    Published,
    QueryRow,
    RemoteQueries,
    query_token,
)
from chronicle.server.store import notify
from chronicle.server.store.rows import RunKey

PUBLISH_DELAY = 0.2
"""Seconds a query offered while a poller of this process waited on its queue stays in this
process only; not taken by then, it is published for every replica's pollers."""

_RETRY_READ = 0.2
"""Seconds before the origin reads its query's row again after a failed read."""

_RETRY_PUBLISH = 0.5
"""Seconds before the origin publishes a query again whose publication failed."""


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
    publish_at: float | None = None
    """Loop time at which to publish the query if no poller of this process took it."""
    remote: bool = False
    """Published (or being published): its row in ``pending_queries`` decides who holds it."""
    published: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the publication in progress ended (written, or failed: ``remote`` False)."""
    stale: bool = False
    """A notification said the row changed: the origin reads it again."""

    def describe(self) -> str:
        """``query 'x'`` or ``update 'x'`` of the workflow, for messages."""
        what = "update" if self.validate_update else "query"
        return f"{what} '{self.name}' of workflow '{self.key.workflow_id}'"

    def token(self) -> bytes:
        """The opaque task token of this query task (``query_token``)."""
        return query_token(self.query_id)


QueryGrant: TypeAlias = QueryTask | ClaimedQuery
"""What a workflow-task poll hands a worker as a query task: from this process's list, or
claimed from ``pending_queries``."""


class QueryRouter:
    """The in-process queues of pending queries, and their way to other replicas."""

    def __init__(self, notifier: notify.Notifier, remote: RemoteQueries) -> None:
        self._notifier = notifier
        self.remote = remote
        self._queues: dict[tuple[str, str], deque[QueryTask]] = {}
        self._pending: dict[str, QueryTask] = {}
        """Every query asked and not finished, waiting or taken, by id."""
        notifier.listen_channel(notify.QUERY_CHANNEL, self._on_row_changed)

    def _on_row_changed(self, query_id: str) -> None:
        """A published query's row changed (``""``: any may have: notifications were lost)."""
        changed = self._pending.values() if not query_id else [self._pending.get(query_id)]
        for query in changed:
            if query is not None and query.remote:
                query.stale = True
                query.changed.set()

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
                now = loop.time()
                if now >= until:
                    if first_pickup and query.remote and await self._claimed_at_pickup(query):
                        continue  # a poll claimed it just in time: wait for its answer
                    raise self._timed_out(query, timeout, pickup, first_pickup)
                if query.stale:
                    await self._read_row(query, until)
                    continue
                if query.publish_at is not None and now >= query.publish_at:
                    await self._publish(query, picked_up_by - now, deadline - now, until)
                    continue
                wake = until if query.publish_at is None else min(until, query.publish_at)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(wake):
                        await query.changed.wait()
            return query.answer.result()
        finally:
            self._pending.pop(query.query_id, None)
            self._withdraw(query)
            if query.remote:
                await asyncio.shield(self._delete_row(query))

    async def _publish(
        self, query: QueryTask, pickup_left: float, deadline_left: float, until: float
    ) -> None:
        """Move the query from this process's list to ``pending_queries``. On failure (the
        database is out of reach) it goes back to this process's list, for its pollers, and
        is published again after ``_RETRY_PUBLISH`` unless taken, unless a row may exist (the
        outcome is unknown): then the row keeps deciding, and a read finding none publishes
        it again (``_read_row``)."""
        query.publish_at = None
        if query.taker is not None or query.answer.done():
            return
        self._withdraw(query)  # from now on no poller of this process takes it from the list
        query.remote = True
        query.published = asyncio.Event()
        try:
            async with asyncio.timeout_at(until):
                await self.remote.publish(
                    Published(
                        query_id=query.query_id,
                        key=query.key,
                        workflow_type=query.workflow_type,
                        task_queue=query.task_queue,
                        name=query.name,
                        args=query.args,
                        validate_update=query.validate_update,
                        hand_offs=query.hand_offs,
                        lost=tuple(query.lost),
                        pickup_left=pickup_left,
                        deadline_left=deadline_left,
                    )
                )
        except Exception as exc:
            if await self._unpublished(query):
                query.remote = False
                self._queue(query, first=True)
                query.publish_at = asyncio.get_running_loop().time() + _RETRY_PUBLISH
                outcome = "only this process's pollers can take it until it is published again"
            else:
                outcome = "its row may exist and decides who takes it"
            telemetry.run_logger(*query.key.params()).warning(
                "query task publication failed",
                outcome=outcome,
                query=query.describe(),
                error=repr(exc),
            )
        else:
            telemetry.run_logger(*query.key.params()).debug(
                "query task published for every replica's pollers",
                query=query.describe(),
                query_id=query.query_id,
            )
        finally:
            query.published.set()

    async def _unpublished(self, query: QueryTask) -> bool:
        """After a failed publication: True when no row of the query exists (never written,
        or deleted now before any claim), so it can go back to this process's list; False
        when a row was written and a poll may hold it (the row keeps deciding)."""
        try:
            async with asyncio.timeout(5.0):
                if await self.remote.withdraw_unclaimed(query.query_id, query.hand_offs):
                    return True
                if await self.remote.read(query.query_id) is None:
                    return True
        except Exception:
            pass
        query.stale = True
        return False

    async def _read_row(self, query: QueryTask, until: float) -> None:
        """Bring the published query's state (taker, hand-offs, answer) up to its row's."""
        query.stale = False
        try:
            async with asyncio.timeout_at(until):
                row = await self.remote.read(query.query_id)
        except Exception as exc:
            telemetry.run_logger(*query.key.params()).warning(
                "could not read a published query's row; reading again",
                query=query.describe(),
                error=repr(exc),
            )
            query.stale = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(until):
                    await asyncio.sleep(_RETRY_READ)
            return
        if row is not None:
            self._apply(query, row)
        elif query.remote and not query.answer.done():
            # Only this process deletes its row before the deadline: a publication that failed
            # never wrote it, and nobody can hold the query. Publish it again (a statement of
            # the failed one that commits late writes the same row: publishing is idempotent).
            query.publish_at = asyncio.get_running_loop().time() + _RETRY_PUBLISH

    @staticmethod
    def _apply(query: QueryTask, row: QueryRow) -> None:
        """Take the published query's state from its row."""
        if query.answer.done():
            return
        query.taker, query.hand_offs, query.lost = row.taker, row.hand_offs, list(row.lost)
        if row.answered:
            query.answer.set_result((row.result, row.failure))

    async def _claimed_at_pickup(self, query: QueryTask) -> bool:
        """At the pickup deadline of a published query nobody took: delete its row, unless a
        poll claimed it meanwhile (True: then its state is read from the row, and the query
        waits for its answer up to the deadline)."""
        try:
            async with asyncio.timeout(5.0):
                if await self.remote.withdraw_unclaimed(query.query_id, 0):
                    query.remote = False
                    return False
                row = await self.remote.read(query.query_id)
        except Exception as exc:
            telemetry.run_logger(*query.key.params()).warning(
                "could not withdraw a published query at its pickup deadline",
                query=query.describe(),
                error=repr(exc),
            )
            return False
        if row is not None:
            self._apply(query, row)
        return query.hand_offs > 0 or query.answer.done()

    async def _delete_row(self, query: QueryTask) -> None:
        """The query ended: delete its row (else swept after its deadline)."""
        try:
            await query.published.wait()
            if query.remote:
                async with asyncio.timeout(5.0):
                    await self.remote.delete(query.query_id)
        except Exception as exc:
            telemetry.run_logger(*query.key.params()).warning(
                "could not delete a finished query's row; it is swept after its deadline",
                query_id=query.query_id,
                error=repr(exc),
            )

    def take(self, namespace: str, task_queue: str, identity: str = "") -> QueryTask | None:
        """The oldest query waiting on the queue, now handed to the poller ``identity``."""
        waiting = self._queues.get((namespace, task_queue))
        while waiting:
            query = waiting.popleft()
            if not query.answer.done():
                query.taker = identity
                query.hand_offs += 1
                query.publish_at = None
                query.changed.set()
                return query
        return None

    def release(self, query: QueryTask, hand_off: int, reason: str) -> bool:
        """Undo hand-off number ``hand_off`` of ``query``: nobody will answer it (``reason``).
        It goes back to the front of its queue and waiting pollers wake. False when there is
        nothing to undo (answered, finished, or taken again since)."""
        if (
            query.answer.done()
            or query.remote
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

    async def release_worker(self, namespace: str, identity: str, reason: str) -> int:
        """Give back every query of ``namespace`` handed to the worker ``identity`` by this
        process (its session here ended), from the list and from ``pending_queries``; how
        many."""
        held = [
            query
            for query in self._pending.values()
            if query.taker == identity and query.key.namespace == namespace and not query.remote
        ]
        released = sum(self.release(query, query.hand_offs, reason) for query in held)
        return released + await self.remote.release_worker(namespace, identity, reason)

    async def respond(self, token: bytes, result: Payload | None, failure: Failure | None) -> None:
        """Deliver a worker's answer; ``NotFound`` when the query is gone (answered, timed
        out). A query handed out again still takes the first answer, from either worker. The
        answer to a published query goes through its row, from whichever replica gets it."""
        try:
            data = json.loads(token)
        except ValueError:
            data = None
        if not isinstance(data, dict) or data.get("t") != "query" or "id" not in data:
            raise errors.InvalidArgument("task_token is malformed", field="task_token")
        query_id = str(data["id"])
        query = self._pending.get(query_id)
        if query is not None and query.remote:
            await query.published.wait()
        if query is not None and not query.remote:
            if query.answer.done():
                raise errors.NotFound("query task not found: it timed out or was already answered")
            query.answer.set_result((result, failure))
            query.changed.set()
            return
        if not await self.remote.answer(query_id, result, failure):
            raise errors.NotFound("query task not found: it timed out or was already answered")
        if query is not None and not query.answer.done():
            query.answer.set_result((result, failure))
            query.changed.set()

    def _offer(self, query: QueryTask, first: bool = False) -> None:
        """Offer ``query`` to this process's pollers (at the front when ``first``); publish it
        for every replica at once when none waits on its queue, else after
        ``PUBLISH_DELAY`` unless taken."""
        waiting = self._notifier.has_waiters(
            notify.TASK_CHANNEL,
            notify.task_key(rows.WORKFLOW, query.key.namespace, query.task_queue),
        )
        now = asyncio.get_running_loop().time()
        query.publish_at = now + PUBLISH_DELAY if waiting else now
        self._queue(query, first)
        query.changed.set()

    def _queue(self, query: QueryTask, first: bool) -> None:
        """Put ``query`` in this process's list of its queue and wake the queue's pollers."""
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
