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
started by another call (a poll records its own request id, replacing an attempt's; another
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

Polls (docs/decisions.md §8). A poll's answer can be lost the same way (the connection broke
after the server started the task, before the reply arrived); when the worker opened its next
session before the server saw the break, nothing else ends that task before its timeout. Each
poll carries a request id, fresh for each attempt, which the task it starts records (the
``WorkflowTaskStarted``, or the attempt's row). A worker whose poll failed without a definite
refusal names it in a release (``release_polls``, on the same RPC; the worker does not know the
run): what it started is released as above, found through the namespace's armed timers. A poll
still running then, on any server (one that has not seen the break yet is still waiting, and may
start a task for it later), is ended: the release announces its request id
(``notify.POLL_RELEASED_CHANNEL``) and the server running it cancels it (``Polling``), as it
would had it seen the break, so what it started goes back (docs/decisions.md §13).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
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


RELEASED_MEMORY: Final = 120.0
"""Seconds a server remembers a released poll it was not running (``Polling``), counted from
when the release reached it: a request still unread then (the server was frozen) is read as
soon as the server runs again, well within this."""

MAX_RELEASED: Final = 10_000
"""The most released polls a server remembers (the oldest are forgotten first)."""


class Polling:
    """The polls running on this server, by ``notify.poll_key``, so that a release naming one
    ends it (``on_released``): a worker released the poll because its call failed, so nobody
    would get what it returns.

    A release naming a poll that does not run here is remembered for ``RELEASED_MEMORY``
    seconds: the poll's request may still be unread (this server was frozen, behind a proxy
    that kept its side of the connection open), and when it comes it ends at once, before it
    can take a task. Ids are fresh per attempt, so no live poll ever carries a released id."""

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Task[object]] = {}
        self._ended: set[asyncio.Task[object]] = set()
        self._released: dict[str, float] = {}  # key -> forgotten at (loop time), oldest first

    @contextlib.contextmanager
    def running(self, namespace: str, identity: str, request_id: str) -> Iterator[None]:
        """Mark the current task as running worker ``identity``'s poll ``request_id`` while
        the body runs (the poll itself, not the writing of its reply, which a cancel must not
        cut off). The key holds the identity: a release ends only its own worker's polls, as
        it matches what they started by identity, never another worker's poll that happens to
        carry the same id. A poll ended by a release raises ``errors.Cancelled`` once the body
        has unwound (its cancellation put back what it started)."""
        task = asyncio.current_task() if request_id else None
        if task is None:
            yield
            return
        key = notify.poll_key(namespace, identity, request_id)
        forget_at = self._released.get(key)
        if forget_at is not None and forget_at > asyncio.get_running_loop().time():
            raise errors.Cancelled(
                "the worker released this poll before it arrived (its call failed on the "
                "worker's side)"
            )
        self._running[key] = task
        try:
            yield
        except asyncio.CancelledError:
            if task not in self._ended or task.uncancel():
                raise  # cancelled for another reason too (its caller went away)
            raise errors.Cancelled(
                "the worker released this poll (its call failed on the worker's side)"
            ) from None
        finally:
            self._ended.discard(task)
            if self._running.get(key) is task:
                del self._running[key]

    def on_released(self, payload: str) -> None:
        """A ``chronicle_poll_released`` notification: cancel the poll it names if it runs
        here (a cancelled poll puts back what it started, docs/decisions.md §13)."""
        if not payload:
            return
        task = self._running.pop(payload, None)
        if task is None:
            self._remember(payload)
        elif task not in self._ended:
            telemetry.logger().info("a poll its worker released is ended")
            self._ended.add(task)
            task.cancel()

    @property
    def remembered(self) -> int:
        """How many releases of polls that did not run here this server remembers."""
        return len(self._released)

    def _remember(self, key: str) -> None:
        now = asyncio.get_running_loop().time()
        released = self._released
        while released and (len(released) >= MAX_RELEASED or next(iter(released.values())) <= now):
            del released[next(iter(released))]
        released.pop(key, None)  # re-inserted last: the order stays the order of expiry
        released[key] = now + RELEASED_MEMORY


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


MAX_POLL_REQUEST_IDS: Final = 1000
"""The most poll request ids one release may name."""


async def release_polls(
    pool: Pool, namespace: str, *, identity: str, request_ids: Sequence[str]
) -> tuple[int, int]:
    """Release what the polls ``request_ids`` of worker ``identity`` started for it on any run
    of ``namespace`` and the worker never got: the workflow tasks time out now, the activity
    attempts go back to their queue uncounted; a poll of those still running on any server is
    ended (``Polling``). Returns (workflow tasks, activity attempts) released. Ids that name
    nothing (the poll returned no task, or it was answered since) change nothing."""
    if not identity:
        raise errors.InvalidArgument(
            "identity is required: the worker that sent the polls", field="identity"
        )
    if len(request_ids) > MAX_POLL_REQUEST_IDS:
        raise errors.InvalidArgument(
            f"at most {MAX_POLL_REQUEST_IDS} poll_request_ids per release, got {len(request_ids)}",
            field="poll_request_ids",
        )
    for index, request_id in enumerate(request_ids):
        if not request_id:
            raise errors.InvalidArgument(
                f"poll_request_ids[{index}] is empty: an empty id would name every task "
                "started by a poll that carried none (an older SDK's)",
                field=f"poll_request_ids[{index}]",
            )
    ids = sorted(set(request_ids))
    log = telemetry.logger(namespace=namespace, identity=identity)
    now = tr.utcnow()
    keys = [notify.poll_key(namespace, identity, i) for i in ids]

    async def body(conn: Conn) -> tuple[int, int]:
        row = await conn.fetchrow(
            sql.RELEASE_POLLED_TASKS, namespace, identity, ids, now, notify.timer_payload(now),
            keys,
        )  # fmt: skip
        assert row is not None
        queues = [notify.task_key(rows.ACTIVITY, namespace, q) for q in row["queues"] or []]
        if queues:
            await conn.execute(sql.NOTIFY_TASKS, queues)
        return int(row["workflow_tasks"]), int(row["activities"])

    workflow_tasks, activities = await db.in_transaction(pool, body)
    if workflow_tasks or activities:
        log.info(
            "tasks started for polls whose worker lost the answer are released",
            workflow_tasks=workflow_tasks,
            activities=activities,
        )
    return workflow_tasks, activities
