"""Lost answers: a worker releases what a completion it never got the answer to started for
it, eagerly: the run's next workflow task and activity attempts.

A completion that asks for the run's next workflow task (``eager_workflow_task``, on
``CompleteWorkflowTask`` or ``CompleteActivityTask``) starts that task in its own commit, and
only its answer carries it; so do the activities a ``CompleteWorkflowTask`` starts eagerly
(``max_eager_activities``). When the answer is lost after the commit (the call cancelled while
its write ended, its stream broken, the server killed between the commit and the reply), the
worker never sees them, and nothing else ends them before their timeouts (the workflow-task
timeout; an activity's start-to-close, 5 minutes by default): the worker is alive, so its
session does not drop, and a restarted server knows nothing of the old one's calls. The
worker knows, though: its call failed without a definite refusal (docs/decisions.md §17). It
then asks for the release (``release``), naming the completion by its request id, which the
eager ``WorkflowTaskStarted`` records (``transition.EagerStart``) and so do the eagerly
started activity rows (``activities.eager_request_id``). The workflow task times out now;
the activity attempts go back to their queue as if never dispatched, uncounted (the worker
never got them, so they never ran), as a poll's unclaimed attempt does (docs/decisions.md §13).

What matches: the run's armed workflow-task timeout whose ``WorkflowTaskStarted`` names this
worker and this request id, and the run's started activity attempts whose rows name both. A
task or attempt someone else holds names another identity; a later one the worker did get was
started by another call (a poll records no request id and clears an attempt's; another
completion records its own; an inline start none, as the worker runs it and reports anyway).
One that was answered, failed or timed out has no armed timer or is no longer started. The
timer loop applies the usual timeout transition with its checks against the run's state, so a
late answer to a released workflow task is refused as stale, as after any timeout. Nobody
holds a released activity attempt's token: only the lost answer carried it.

Order: the release must see the completion's final outcome. A retried completion answered
NOT_FOUND shows that the first attempt's commit came before the retry, so before the release.
A completion cancelled on this server may still be writing: the release waits for it to end
(``Answering``). A completion still writing on another server when the release runs is not
waited for; its task then times out when its timeout falls due, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from chronicle.server import errors, telemetry
from chronicle.server.engine import tasks as rows
from chronicle.server.engine import transition as tr
from chronicle.server.store import notify, sql
from chronicle.server.store import pool as db
from chronicle.server.store.pool import Conn, Pool
from chronicle.server.store.rows import RunKey

SETTLE_TIMEOUT: Final = 10.0
"""Seconds a release waits at most for this server's completions with its request id."""


class Answering:
    """The completions running on this server, by (namespace, request id), so that a release
    waits until their writes have ended (``release``). A count per request id while it runs;
    an event only when a release waits."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, str], int] = {}
        self._ended: dict[tuple[str, str], asyncio.Event] = {}

    @contextlib.contextmanager
    def running(self, namespace: str, request_id: str) -> Iterator[None]:
        """Mark the completion ``request_id`` as running while the body runs. The body must
        have given its connection back to the pool when it ends (the pool's release waits for
        a cancelled statement), so its write has then applied or never will."""
        if not request_id:
            yield
            return
        key = (namespace, request_id)
        self._running[key] = self._running.get(key, 0) + 1
        try:
            yield
        finally:
            left = self._running[key] - 1
            if left:
                self._running[key] = left
            else:
                del self._running[key]
                ended = self._ended.pop(key, None)
                if ended is not None:
                    ended.set()

    async def settled(self, namespace: str, request_id: str, timeout: float) -> bool:
        """Wait (up to ``timeout`` s) until no completion ``request_id`` runs here; False if
        one still did when the time ran out."""
        key = (namespace, request_id)
        if key not in self._running:
            return True
        ended = self._ended.setdefault(key, asyncio.Event())
        try:
            await asyncio.wait_for(ended.wait(), timeout)
        except TimeoutError:
            return False
        return True


@dataclass(frozen=True, slots=True)
class Released:
    """What a release ended: the workflow task timed out, the activity attempts put back."""

    workflow_task: bool
    """The workflow task the completion started was still outstanding."""
    activities: int
    """The activity attempts the completion started eagerly and still outstanding."""


async def release(
    pool: Pool, answering: Answering, key: RunKey, *, identity: str, request_id: str
) -> Released:
    """Release what the completion ``request_id`` of worker ``identity`` started for it
    eagerly on run ``key`` and is still outstanding: the workflow task times out now, the
    activity attempts go back to their queue uncounted.

    Idempotent: a second release finds no armed timer and no attempt still started.
    """
    if not request_id:
        raise errors.InvalidArgument(
            "request_id is required: the request id of the completion whose answer was lost",
            field="request_id",
        )
    if not identity:
        raise errors.InvalidArgument(
            "identity is required: the worker that sent the completion", field="identity"
        )
    log = telemetry.run_logger(*key.params()).bind(identity=identity, request_id=request_id)
    if not await answering.settled(key.namespace, request_id, SETTLE_TIMEOUT):
        log.warning(
            "the completion is still being written on this server; releasing what it committed"
        )
    now = tr.utcnow()

    async def body(conn: Conn) -> Released:
        row = await conn.fetchrow(
            sql.RELEASE_EAGER_TASKS, *key.params(), identity, request_id, now,
            notify.timer_payload(now),
        )  # fmt: skip
        assert row is not None
        keys = [notify.task_key(rows.ACTIVITY, key.namespace, q) for q in row["queues"] or []]
        if keys:
            await conn.execute(sql.NOTIFY_TASKS, keys)
        return Released(bool(row["workflow_tasks"]), int(row["activities"]))

    released = await db.in_transaction(pool, body)
    if released.workflow_task or released.activities:
        log.info(
            "tasks started eagerly for a worker that lost the answer are released",
            workflow_task=released.workflow_task,
            activities=released.activities,
        )
    return released
