"""The workflow-task grant: what a worker receives for a started workflow task.

Shared by the poll path (``dispatch.dispatch``) and the eager path (a workflow task started
in the transaction that records an activity result, ``activity_task.complete``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from chronicle.history import events as ev
from chronicle.server import telemetry
from chronicle.server.engine import read
from chronicle.server.engine import transition as tr
from chronicle.server.engine.services import Services
from chronicle.server.engine.tokens import WorkflowTaskToken
from chronicle.server.store import notify, sql
from chronicle.server.store.pool import Conn, Pool
from chronicle.server.store.rows import RunKey, StoredEvent


@dataclass(frozen=True, slots=True)
class WorkflowTaskGrant:
    """A dispatched workflow task, ready to be sent to the worker."""

    token: WorkflowTaskToken
    workflow_type: str
    task_queue: str
    events: list[StoredEvent]
    attempt: int
    activities_rate_limited: bool = False
    """The run's task queue has an activity rate limit (the worker runs nothing inline)."""


async def grant(
    conn: Conn,
    key: RunKey,
    outcome: tr.Outcome,
    *,
    after: int,
    rate_limited_queues: frozenset[str] = frozenset(),
) -> WorkflowTaskGrant:
    """The grant of the workflow task ``outcome`` started (in the caller's transaction).

    The worker gets the events after event ``after``: 0 for the whole history, or the last
    ``WorkflowTaskStarted`` it processed when it may hold the run in its sticky cache. Events of
    this transition come from memory; only older ones are read. ``rate_limited_queues`` (looked
    up before the transaction, so nothing can fail after its commit) sets
    ``activities_rate_limited``.
    """
    older = await older_events(conn, key, after, outcome.previous.next_event_id)
    return assemble(key, outcome, after=after, older=older, rate_limited_queues=rate_limited_queues)


async def older_events(
    conn: Conn | Pool, key: RunKey, after: int, written: int
) -> list[StoredEvent]:
    """The events a grant needs that are already stored: ``after`` < id < ``written`` (the
    ``next_event_id`` before the transition). Stored events never change, so this may be read
    before the transition's write as well as after it."""
    return await read.fetch_events(conn, key, after + 1, written) if after + 1 < written else []


def assemble(
    key: RunKey,
    outcome: tr.Outcome,
    *,
    after: int,
    older: list[StoredEvent],
    rate_limited_queues: frozenset[str] = frozenset(),
) -> WorkflowTaskGrant:
    """The grant from ``older`` (``older_events``) and the transition's own events, with no
    I/O: what a write's caller can build when nothing may fail after its commit."""
    state = outcome.state
    task = state.workflow_task
    assert task is not None
    events = older + [
        StoredEvent(e.id, e.type, e.time, attributes)
        for e, attributes in zip(outcome.events, outcome.events_json, strict=True)
        if e.id > after
    ]
    token = WorkflowTaskToken(key, task.scheduled_event_id, task.started_event_id)
    limited = task.task_queue in rate_limited_queues
    return WorkflowTaskGrant(
        token, state.workflow_type, task.task_queue, events, task.attempt, limited
    )


@dataclass(frozen=True, slots=True)
class StartedTask:
    """A ``WorkflowTaskStarted`` a write appends (or may have) for a poll: which run, its event
    id, time and the poller's identity. Another dispatch of the same task appends the same
    event id, but never at the same time for the same identity."""

    key: RunKey
    event_id: int
    at: datetime
    identity: str

    @classmethod
    def among(cls, key: RunKey, events: Sequence[ev.Event]) -> StartedTask:
        """The task the ``WorkflowTaskStarted`` among a transition's ``events`` starts."""
        for event in events:
            if isinstance(event.attributes, ev.WorkflowTaskStarted):
                return cls(key, event.id, event.time, event.attributes.identity)
        raise ValueError("the events start no workflow task")

    @classmethod
    def of_grant(cls, grant: WorkflowTaskGrant, identity: str) -> StartedTask:
        """The task ``grant`` (for a poller named ``identity``) hands out."""
        token = grant.token
        event = next(e for e in grant.events if e.event_id == token.started_event_id)
        return cls(token.key, token.started_event_id, event.event_time, identity)


async def expire_unclaimed(services: Services, task: StartedTask, reason: str) -> None:
    """A workflow task was (maybe) started for a caller that did not get it: move its timeout
    timer to now, so it is retried at once instead of after its workflow-task timeout.

    Matches nothing when the write starting ``task`` did not apply, also when another dispatch
    started the same task. Call it only once that write's outcome is settled: after its
    connection went back to the pool, whose release waits for a cancelled statement to end
    (``unclaimed``). Never raises: while the database is unavailable it is retried in the
    background (``reclaim.py``); if it cannot run at all, the timeout is the safety net."""
    log = telemetry.run_logger(*task.key.params())

    async def expire() -> None:
        now = tr.utcnow()
        await services.pool.execute(
            sql.EXPIRE_WORKFLOW_TASK,
            *task.key.params(),
            task.event_id,
            now,
            notify.timer_payload(now),
            task.at,
            task.identity,
        )
        log.info(
            "a workflow task may have been started for a caller that did not get it; timed it out",
            reason=reason,
        )

    await services.reclaims.now_or_later(expire, "an unclaimed workflow task", log)


@contextlib.asynccontextmanager
async def unclaimed(services: Services, reason: str) -> AsyncIterator[list[StartedTask]]:
    """Tasks started for a caller that may not get them: the body lists a task before the
    write that starts it, and takes it out once that write is known not to have applied. A
    body that returns hands its grant on: nothing more is done. When the body raises
    (cancelled, failed) with a task still listed, that task is timed out at once
    (``expire_unclaimed``), after the body's connection was released, so the write's outcome
    is settled by then."""
    started: list[StartedTask] = []
    try:
        yield started
    except BaseException:
        for task in started:
            await asyncio.shield(expire_unclaimed(services, task, reason))
        raise


def started_for(key: RunKey, events: Sequence[ev.Event], identity: str) -> StartedTask | None:
    """The workflow task a transition's ``events`` start for ``identity`` (eagerly), if any."""
    for event in events:
        attributes = event.attributes
        if isinstance(attributes, ev.WorkflowTaskStarted) and attributes.identity == identity:
            return StartedTask(key, event.id, event.time, identity)
    return None
