"""Queries across server replicas: the ``pending_queries`` table and its notifications.

A query that no poller of the asking process (its *origin*) takes at once is written to
``pending_queries`` (``publish``) and announced on ``chronicle_query_offer`` with its queue's
task key. From then on the row decides who holds it: a workflow-task poller on any replica,
the origin's included, claims it with one statement (``claim``: row lock, ``SKIP LOCKED``, a
re-checked ``taker IS NULL``), so each hand-off goes to exactly one poll. A claim, a give-back
and an answer each NOTIFY ``chronicle_query`` with the query id (never a payload: NOTIFY
payloads are small); the origin then reads the row (``read``) and deletes it when the query
ends. Rows of an origin that died are swept once past their deadline by the next
``publish`` anywhere, and a claim or an answer never touches a row past its deadline.

Pollers claim only when a notification said a query may be waiting on their queue
(``may_be_pending``: an in-memory flag per queue, set by ``chronicle_query_offer``, cleared
before each claim and set again after a successful one, or one whose outcome is unknown: its
statement failed or its poll was cancelled), so a poll runs no extra statement
while no query is pending anywhere. After a reconnect of the notifier (notifications may have
been missed) and once after start, every queue's next poll claims once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Final

from chronicle.history.values import Failure, Payload
from chronicle.server import telemetry
from chronicle.server.engine import tasks as rows
from chronicle.server.store import notify, sql
from chronicle.server.store import pool as db
from chronicle.server.store.rows import (
    RunKey,
    failure_from_json,
    failure_to_json,
    payload_from_json,
    payload_to_json,
    payloads_from_json,
    payloads_to_json,
)

CLAIM_CANCELLED: Final = "the poll that claimed it ended before it returned it"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedQuery:
    """A query that a poller of this process claimed from ``pending_queries``."""

    key: RunKey
    workflow_type: str
    task_queue: str
    name: str
    args: tuple[Payload, ...]
    validate_update: bool
    query_id: str
    hand_off: int

    def token(self) -> bytes:
        """The opaque task token (``query_token``)."""
        return query_token(self.query_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryRow:
    """What the origin reads back of its query's row."""

    taker: str | None
    hand_offs: int
    lost: tuple[str, ...]
    answered: bool
    result: Payload | None
    failure: Failure | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Published:
    """What ``publish`` writes: a query of this process, with its time limits in seconds."""

    query_id: str
    key: RunKey
    workflow_type: str
    task_queue: str
    name: str
    args: tuple[Payload, ...]
    validate_update: bool
    hand_offs: int
    lost: tuple[str, ...]
    pickup_left: float
    deadline_left: float


def query_token(query_id: str) -> bytes:
    """The opaque task token of query ``query_id``, handed out in memory or claimed from a row
    (``QueryRouter.respond`` reads it back)."""
    return json.dumps({"t": "query", "id": query_id}).encode()


class RemoteQueries:
    """This process's side of ``pending_queries``: publishing, claiming, answering, releasing."""

    def __init__(self, pool: db.Pool, notifier: notify.Notifier, server_id: str) -> None:
        self._pool = pool
        self._notifier = notifier
        self.server_id = server_id
        """This process, as rows name it (``origin``, ``taker_server``)."""
        self._hinted: set[str] = set()
        """Task keys of queues announced on ``chronicle_query_offer`` since their last claim."""
        self._epoch = 1
        self._checked: dict[str, int] = {}
        """Per task key, the notifier epoch of its last claim (an older one: claim once)."""
        notifier.listen_channel(notify.QUERY_OFFER_CHANNEL, self._on_offer)

    def _on_offer(self, payload: str) -> None:
        if not payload:  # reconnected: offers may have been missed
            self._epoch += 1
            return
        self._hinted.add(payload)
        self._notifier.wake(notify.TASK_CHANNEL, payload)

    def may_be_pending(self, namespace: str, task_queue: str) -> bool:
        """Whether a claim on the queue may find something (no database round trip)."""
        key = notify.task_key(rows.WORKFLOW, namespace, task_queue)
        return key in self._hinted or self._checked.get(key) != self._epoch

    async def claim(self, namespace: str, task_queue: str, identity: str) -> ClaimedQuery | None:
        """The oldest claimable query of the queue, now handed to poller ``identity``; None
        when there is none or no notification said there may be one."""
        key = notify.task_key(rows.WORKFLOW, namespace, task_queue)
        if key not in self._hinted and self._checked.get(key) == self._epoch:
            return None
        self._hinted.discard(key)  # before the look: an offer during it sets it again
        self._checked[key] = self._epoch
        claim_id = str(uuid.uuid4())
        try:
            row = await self._pool.fetchrow(
                sql.CLAIM_QUERY, namespace, task_queue, identity, self.server_id, claim_id
            )
        except BaseException:
            # The claim's outcome is unknown (the pool released its connection after the
            # statement ended): give back whatever it took, for the next poller. The offer
            # it was looking for is not used up: the next poll of the queue looks again.
            self._hinted.add(key)
            self._notifier.wake(notify.TASK_CHANNEL, key)
            await asyncio.shield(self._release_claim(claim_id))
            raise
        if row is None:
            return None
        # There may be more: this process's other pollers look again.
        self._hinted.add(key)
        self._notifier.wake(notify.TASK_CHANNEL, key)
        claimed = ClaimedQuery(
            key=RunKey(namespace, row["workflow_id"], row["run_id"]),
            workflow_type=row["workflow_type"],
            task_queue=task_queue,
            name=row["name"],
            args=payloads_from_json(row["args"]),
            validate_update=row["validate_update"],
            query_id=row["query_id"],
            hand_off=row["hand_offs"],
        )
        telemetry.run_logger(*claimed.key.params()).info(
            "query task claimed from another process's offer",
            query_id=claimed.query_id,
            query=claimed.name,
            taker=identity,
            hand_off=claimed.hand_off,
        )
        return claimed

    async def _release_claim(self, claim_id: str) -> None:
        try:
            async with asyncio.timeout(10):
                released = await db.in_transaction(
                    self._pool,
                    lambda conn: self._give_back(
                        conn, sql.RELEASE_CLAIM, claim_id, CLAIM_CANCELLED
                    ),
                )
        except Exception as exc:  # best effort: the row's deadline bounds it
            telemetry.logger(component="queries").warning(
                "could not give back a query claim of a poll that ended; it waits for its "
                "worker's session to end or its deadline",
                claim_id=claim_id,
                error=repr(exc),
            )
            return
        if released:
            telemetry.logger(component="queries").info(
                "query claim given back: its poll ended", claim_id=claim_id
            )

    async def _give_back(self, conn: db.Conn, statement: str, *args: object) -> int:
        """Run a release statement and announce the queues of what it gave back."""
        released = await conn.fetch(statement, *args)
        keys = {
            notify.task_key(rows.WORKFLOW, row["namespace"], row["task_queue"]) for row in released
        }
        if keys:
            await conn.execute(sql.NOTIFY_QUERY_OFFERS, sorted(keys))
        for row in released:
            telemetry.logger(
                component="queries",
                namespace=row["namespace"],
                workflow_id=row["workflow_id"],
                run_id=row["run_id"],
            ).info(
                "query task given back: the worker it was handed to will not answer",
                query_id=row["query_id"],
                hand_off=row["hand_offs"],
            )
        return len(released)

    async def release_worker(self, namespace: str, identity: str, reason: str) -> int:
        """Give back the queries this process's pollers claimed for worker ``identity`` (its
        session here ended); how many. Their origins learn it from the row."""
        return await db.in_transaction(
            self._pool,
            lambda conn: self._give_back(
                conn, sql.RELEASE_WORKER_QUERIES, namespace, identity, self.server_id, reason
            ),
        )

    async def publish(self, query: Published) -> None:
        """Write the query's row and announce its queue to every replica's pollers."""
        await self._pool.execute(
            sql.PUBLISH_QUERY,
            query.query_id,
            *query.key.params(),
            query.task_queue,
            query.workflow_type,
            query.name,
            payloads_to_json(query.args),
            query.validate_update,
            self.server_id,
            max(query.pickup_left, 0.0),
            max(query.deadline_left, 0.0),
            query.hand_offs,
            list(query.lost),
            notify.task_key(rows.WORKFLOW, query.key.namespace, query.task_queue),
        )

    async def read(self, query_id: str) -> QueryRow | None:
        """The query's row as it is now; None once it is gone."""
        row = await self._pool.fetchrow(sql.READ_QUERY, query_id)
        if row is None:
            return None
        return QueryRow(
            taker=row["taker"],
            hand_offs=row["hand_offs"],
            lost=tuple(row["lost"]),
            answered=row["answered"],
            result=payload_from_json(row["result"]),
            failure=failure_from_json(row["failure"]),
        )

    async def answer(self, query_id: str, result: Payload | None, failure: Failure | None) -> bool:
        """Record a worker's answer; False when the query is gone or answered already."""
        notified = await self._pool.fetchval(
            sql.ANSWER_QUERY, query_id, payload_to_json(result), failure_to_json(failure)
        )
        return bool(notified)

    async def withdraw_unclaimed(self, query_id: str, hand_offs: int) -> bool:
        """Delete the row unless a poll claimed the query since it had ``hand_offs``
        hand-offs; True when deleted."""
        deleted = await self._pool.fetchval(sql.WITHDRAW_UNCLAIMED_QUERY, query_id, hand_offs)
        return deleted is not None

    async def delete(self, query_id: str) -> None:
        """Delete the row (the query ended)."""
        await self._pool.execute(sql.DELETE_QUERY, query_id)
