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
started activity rows (``activities.eager_request_id``); they time out now.

What matches: the run's armed workflow-task timeout whose ``WorkflowTaskStarted`` names this
worker and this request id, and the armed start-to-close timeouts of the run's started
activity attempts whose rows name both. A task or attempt someone else holds names another
identity; a later one the worker did get was started by another call (a poll records no
request id and clears an attempt's; another completion records its own; an inline start none,
as the worker runs it and reports anyway). One that was answered, failed or timed out has no
armed timer. The timer loop applies the usual timeout transitions with their checks against
the run's state, so a late answer to a released task is refused as stale, as after any
timeout; a released attempt is retried per its policy, as a lost worker's
(``workers.worker_lost``).

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
from chronicle.server.engine import transition as tr
from chronicle.server.store import notify, sql
from chronicle.server.store.pool import Pool
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
    """What a release timed out."""

    workflow_task: bool
    """The workflow task the completion started was still outstanding."""
    activities: int
    """The activity attempts the completion started eagerly and still outstanding."""


async def release(
    pool: Pool, answering: Answering, key: RunKey, *, identity: str, request_id: str
) -> Released:
    """Time out now what the completion ``request_id`` of worker ``identity`` started for it
    eagerly on run ``key`` and is still outstanding: the workflow task and activity attempts.

    Idempotent: a second release finds no armed timer.
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
    row = await pool.fetchrow(
        sql.RELEASE_EAGER_TASKS,
        *key.params(),
        identity,
        request_id,
        now,
        notify.timer_payload(now),
    )
    assert row is not None
    released = Released(bool(row["workflow_tasks"]), int(row["activities"]))
    if released.workflow_task or released.activities:
        log.info(
            "tasks started eagerly for a worker that lost the answer time out now",
            workflow_task=released.workflow_task,
            activities=released.activities,
        )
    return released
