"""Lost answers: a worker releases the workflow task that a completion it never got the answer
to started for it.

A completion that asks for the run's next workflow task (``eager_workflow_task``, on
``CompleteWorkflowTask`` or ``CompleteActivityTask``) starts that task in its own commit, and
only its answer carries it. When the answer is lost after the commit (the call cancelled while
its write ended, its stream broken, the server killed between the commit and the reply), the
worker never sees the task, and nothing else ends it before its workflow-task timeout: the
worker is alive, so its session does not drop, and a restarted server knows nothing of the
old one's calls. The worker knows, though: its call failed without a definite refusal
(docs/decisions.md §17). It then asks for the release (``release``), naming the completion by
the request id that the eager ``WorkflowTaskStarted`` records (``transition.EagerStart``), and
the task times out now.

What matches: the run's armed workflow-task timeout whose ``WorkflowTaskStarted`` names this
worker and this request id. A task someone else holds names another identity; a later task
the worker did get was started by another call (a poll records no request id, another
completion its own). A task that was answered, failed or timed out has no armed timer. The
timer loop applies the usual timeout transition with its checks against the run's state, so a
late answer to the released task is refused as stale, as after any timeout.

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


async def release(
    pool: Pool, answering: Answering, key: RunKey, *, identity: str, request_id: str
) -> bool:
    """Time out now the workflow task that the completion ``request_id`` of worker
    ``identity`` started for it on run ``key``, if that task is still outstanding.

    Idempotent: a second release finds no armed timer. Returns whether a task was released.
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
    released = await pool.fetchval(
        sql.RELEASE_EAGER_WORKFLOW_TASK,
        *key.params(),
        identity,
        request_id,
        now,
        notify.timer_payload(now),
    )
    if released:
        log.info("a workflow task started for a worker that lost the answer times out now")
    return bool(released)
