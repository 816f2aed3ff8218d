"""Queries: routed in memory from ``QueryWorkflow`` to a worker polling the run's task queue.

A query writes nothing. It waits in a per-queue list of this process until a workflow-task
poller takes it (as a query-only task: ``query`` set, no events; the worker answers from its
cache or by replaying the history) and answers with ``RespondQueryTask``. Only pollers
connected to the same server process see the query (a gap once several replicas run).

The validation of an update (``validate_update``) travels the same way: it is a read-only
question to the workflow's code, like a query.

Two bounded waits: a query no poller takes within ``pickup_timeout`` fails with
``FailedPrecondition`` ("no worker is polling task queue …"); one taken but not answered within
``timeout`` fails with ``DeadlineExceeded``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from dataclasses import dataclass, field

from chronicle.history.values import Failure, Payload
from chronicle.server import errors
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
    taken: asyncio.Event = field(default_factory=asyncio.Event)

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
        self._taken: dict[str, QueryTask] = {}

    async def ask(
        self, query: QueryTask, timeout: float, pickup_timeout: float | None = None
    ) -> tuple[Payload | None, Failure | None]:
        """Queue ``query`` and wait up to ``timeout`` s for a worker's answer (see the module
        docstring for the two errors)."""
        queue_key = (query.key.namespace, query.task_queue)
        self._queues.setdefault(queue_key, deque()).append(query)
        self._notifier.wake(
            notify.TASK_CHANNEL,
            notify.task_key(rows.WORKFLOW, query.key.namespace, query.task_queue),
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pickup = min(timeout, pickup_timeout) if pickup_timeout is not None else timeout
        try:
            try:
                async with asyncio.timeout(pickup):
                    await query.taken.wait()
            except TimeoutError:
                if pickup < timeout:
                    raise errors.FailedPrecondition(
                        f"no worker is polling task queue '{query.task_queue}' (namespace "
                        f"'{query.key.namespace}'): {query.describe()} was not picked up "
                        f"within {pickup:.1f}s"
                    ) from None
                raise
            async with asyncio.timeout(max(deadline - loop.time(), 0.0)):
                return await query.answer
        except TimeoutError:
            raise errors.DeadlineExceeded(
                f"no worker answered {query.describe()} "
                f"(task queue '{query.task_queue}') within {timeout:.1f}s"
            ) from None
        finally:
            self._taken.pop(query.query_id, None)
            waiting = self._queues.get(queue_key)
            if waiting is not None:
                if query in waiting:
                    waiting.remove(query)
                if not waiting:
                    del self._queues[queue_key]

    def take(self, namespace: str, task_queue: str) -> QueryTask | None:
        """The oldest query waiting on the queue, now handed to a poller."""
        waiting = self._queues.get((namespace, task_queue))
        while waiting:
            query = waiting.popleft()
            if not query.answer.done():
                self._taken[query.query_id] = query
                query.taken.set()
                return query
        return None

    def respond(self, token: bytes, result: Payload | None, failure: Failure | None) -> None:
        """Deliver a worker's answer; ``NotFound`` when the query is gone (timed out)."""
        try:
            data = json.loads(token)
        except ValueError:
            data = None
        if not isinstance(data, dict) or data.get("t") != "query":
            raise errors.InvalidArgument("task_token is malformed", field="task_token")
        query = self._taken.pop(str(data.get("id")), None)
        if query is None or query.answer.done():
            raise errors.NotFound("query task not found: it timed out or was already answered")
        query.answer.set_result((result, failure))
