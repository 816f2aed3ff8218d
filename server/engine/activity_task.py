"""Activity tasks: dispatch, completion, failure with retries, heartbeats.

Attempts and retries write no history: they live in the ``activities`` row. Only the final
outcome (completed, failed, timed out, cancelled) is an event, applied at most once because it
requires the row to exist at the token's attempt in state ``started``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TypeVar

from chronicle.history import codec
from chronicle.history import events as ev
from chronicle.history.state import WorkflowState
from chronicle.history.values import Failure, FailureKind, Payload, RetryPolicy, TimeoutType
from chronicle.server import errors, telemetry
from chronicle.server.engine import grants, watch
from chronicle.server.engine import tasks as rows
from chronicle.server.engine import transition as tr
from chronicle.server.engine.services import Services
from chronicle.server.engine.tokens import ActivityTaskToken, decode_activity_token
from chronicle.server.store import notify, sql
from chronicle.server.store import pool as db
from chronicle.server.store.pool import Conn
from chronicle.server.store.rows import ActivityInfo, RunKey, payloads_from_json

T = TypeVar("T")

STALE_TASK = "activity task not found: already completed, timed out or cancelled"


@dataclass(frozen=True, slots=True)
class ActivityTaskGrant:
    """A dispatched activity attempt, ready to be sent to the poller."""

    token: ActivityTaskToken
    workflow_type: str
    attributes: ev.ActivityScheduled
    attempt: int
    scheduled_time: datetime
    attempt_scheduled_time: datetime
    started_time: datetime
    heartbeat_details: tuple[Payload, ...]


async def dispatch(
    services: Services,
    namespace: str,
    task_queue: str,
    identity: str,
    sent: list[datetime] | None = None,
    request_id: str = "",
) -> ActivityTaskGrant | None:
    """Lease the next activity task of the queue and mark the attempt started (no event).

    One statement (its own transaction): delete the task row, start the attempt, insert its
    start-to-close (and heartbeat) timers and notify the timer loop. The start time of each
    statement sent goes into ``sent`` (``unclaimed``) before it is sent, once a connection to
    send it on is there (a poll that could not connect started nothing). The attempt's row
    records ``request_id``, the poll's, for a worker that lost the poll's answer to release it
    (``lost_answers.release_polls``).
    """
    while True:
        now = tr.utcnow()
        async with services.pool.acquire() as conn:
            if sent is not None:
                sent.append(now)
            row = await conn.fetchrow(
                sql.DISPATCH_ACTIVITY, namespace, task_queue, now, identity, request_id
            )
        if row is None:
            return None
        if row["attempt"] is None:
            continue  # resolved or cancelled meanwhile: the task row was stale (now deleted)
        attributes = codec.decode_attributes("ActivityScheduled", row["attributes"])
        assert isinstance(attributes, ev.ActivityScheduled)
        key = RunKey(namespace, row["workflow_id"], row["run_id"])
        return ActivityTaskGrant(
            ActivityTaskToken(key, row["scheduled_event_id"], row["attempt"]),
            row["workflow_type"] or "",
            attributes,
            row["attempt"],
            row["scheduled_time"],
            row["attempt_scheduled_time"],
            now,
            payloads_from_json(row["heartbeat_details"]),
        )


@contextlib.asynccontextmanager
async def unclaimed(
    services: Services, namespace: str, task_queue: str, identity: str
) -> AsyncIterator[list[datetime]]:
    """Activity attempts started for a poll that ends without them go back to the queue.

    The body passes the yielded list to ``dispatch``. When the body raises (the poll was
    cancelled: its caller went away, its stream broke), every attempt those dispatches may
    have started is put back as if never dispatched (``sql.UNDISPATCH_ACTIVITY``): no worker
    got it, so it is not an attempt that timed out, and waiting for its start-to-close timeout
    (5 minutes by default) would only delay it. ``services.pool.fetchrow`` has given its
    connection back, and so waited for a cancelled statement to end, before the body raises.
    """
    sent: list[datetime] = []
    try:
        yield sent
    except BaseException:
        if sent:
            await asyncio.shield(_undispatch(services, namespace, task_queue, identity, sent))
        raise


async def _undispatch(
    services: Services, namespace: str, task_queue: str, identity: str, sent: list[datetime]
) -> None:
    """Put back the attempts started at the times in ``sent``; never raises (while the
    database is unavailable, retried in the background: ``reclaim.py``)."""
    log = telemetry.logger(namespace=namespace, task_queue=task_queue)
    key = notify.task_key(rows.ACTIVITY, namespace, task_queue)
    for started_at in sent:

        async def undo(started_at: datetime = started_at) -> None:
            requeued = await services.pool.fetchval(
                sql.UNDISPATCH_ACTIVITY, namespace, identity, started_at, task_queue, key
            )
            if requeued:
                log.info("an activity task dispatched to a poll that ended is queued again")

        await services.reclaims.now_or_later(undo, "an unclaimed activity task", log)


@dataclass(frozen=True, slots=True)
class EagerActivities:
    """Activities a transition starts eagerly for ``identity`` at ``started_at`` (their
    ``ActivityScheduled`` time), on the run's ``task_queue``."""

    key: RunKey
    scheduled_event_ids: tuple[int, ...]
    started_at: datetime
    identity: str
    task_queue: str

    @classmethod
    def of(cls, key: RunKey, granted: list[ActivityTaskGrant], identity: str) -> EagerActivities:
        """The start of ``granted`` (``start_eagerly``'s grants, all of one transition)."""
        return cls(
            key,
            tuple(g.token.scheduled_event_id for g in granted),
            granted[0].started_time,
            identity,
            granted[0].attributes.task_queue,
        )


@contextlib.asynccontextmanager
async def unclaimed_eager(services: Services) -> AsyncIterator[list[EagerActivities]]:
    """Activities a completion starts eagerly for its caller, who may not get them: the body
    lists them before the write (``start_eagerly`` runs before it). When the body raises (the
    completion's outcome is unknown, or it was cancelled), they are put back in their queue as
    if never dispatched; a write that did not apply left nothing to put back."""
    started: list[EagerActivities] = []
    try:
        yield started
    except BaseException:
        for start in started:
            await asyncio.shield(_undispatch_eager(services, start))
        raise


async def _undispatch_eager(services: Services, start: EagerActivities) -> None:
    """Put back the attempts ``start`` names; never raises (see ``_undispatch``)."""
    log = telemetry.run_logger(*start.key.params())
    key = notify.task_key(rows.ACTIVITY, start.key.namespace, start.task_queue)

    async def undo() -> None:
        requeued = await services.pool.fetchval(
            sql.UNDISPATCH_EAGER_ACTIVITIES,
            *start.key.params(),
            list(start.scheduled_event_ids),
            start.identity,
            start.started_at,
            start.task_queue,
            key,
        )
        if requeued:
            log.info("activities started eagerly for a caller that did not get them are queued")

    await services.reclaims.now_or_later(undo, "activities started eagerly", log)


INLINE_RECORD_WAIT = 10.0
"""Seconds a report with an inline token waits for the completion that records its activity."""


class _NotYetRecorded(Exception):
    """An inline token names no pending activity while a workflow task is in flight."""


def _started(ctx: tr.Context, token: ActivityTaskToken) -> ActivityInfo:
    sid = token.scheduled_event_id_in(ctx.state)
    info = ctx.activities.get(sid)
    if info is None and not sid and token.activity_id:
        task = ctx.state.workflow_task
        if ctx.state.is_open and task is not None and task.started_event_id:
            raise _NotYetRecorded
    if info is None or info.attempt != token.attempt or info.state != "started":
        raise errors.NotFound(STALE_TASK)
    return info


async def _in_transaction(
    services: Services, token: ActivityTaskToken, body: Callable[[Conn], Awaitable[T]]
) -> T:
    """``body`` in one transaction. A report with an inline token (an async completer may get it
    before the workflow-task completion that records the activity has committed) waits for that
    completion, up to ``INLINE_RECORD_WAIT`` s, instead of failing as stale."""
    if not token.activity_id:
        return await db.in_transaction(services.pool, body)

    async def attempt() -> tuple[T] | None:
        try:
            return (await db.in_transaction(services.pool, body),)
        except _NotYetRecorded:
            return None  # wait for the run's next events

    done = await watch.long_poll_run(services, token.key, attempt, INLINE_RECORD_WAIT, recheck=0.5)
    if done is None:
        raise errors.NotFound(STALE_TASK)
    return done[0]


def _locked_ids(token: ActivityTaskToken) -> list[int] | Callable[[WorkflowState], list[int]]:
    """The ``activities`` row to lock: known from a server token, looked up for an inline one."""
    if token.scheduled_event_id:
        return [token.scheduled_event_id]
    return lambda state: [token.scheduled_event_id_in(state)]


async def _run(services: Services, token: ActivityTaskToken, callback: tr.Callback) -> tr.Outcome:
    async def body(conn: Conn) -> tr.Outcome:
        return await tr.transition(conn, token.key, callback, activity_ids=_locked_ids(token))

    return await _in_transaction(services, token, body)


def start_eagerly(
    planned: tr.Planned,
    key: RunKey,
    *,
    identity: str,
    activity_types: frozenset[str],
    limit: int,
    rate_limited_queues: frozenset[str] = frozenset(),
    request_id: str = "",
) -> list[ActivityTaskGrant]:
    """Start up to ``limit`` activities scheduled by this transition for worker ``identity``.

    Eager activity dispatch: instead of a task row (and a second transaction when a poller takes
    it), the ``activities`` row is written as *started* with its start-to-close (and heartbeat)
    timers, exactly as ``DISPATCH_ACTIVITY`` would, in the transaction that schedules it. Only
    activities on the run's own task queue whose type the worker serves qualify, and none of a
    rate-limited queue (its dispatch enforces the limit). Each row records ``request_id``,
    the completion's, whose answer alone carries the attempt: a worker that lost that answer
    releases the attempts by it (``lost_answers.py``). Pure: changes ``planned.changes`` in
    place.
    """
    grants: list[ActivityTaskGrant] = []
    state, changes = planned.state, planned.changes
    for event in planned.events:
        if len(grants) >= limit:
            break
        a = event.attributes
        sid = event.id
        if (
            not isinstance(a, ev.ActivityScheduled)
            or a.activity_type not in activity_types
            or a.task_queue != state.task_queue
            or a.task_queue in rate_limited_queues
            or sid not in changes.insert_activities
            or (rows.ACTIVITY, sid) not in changes.insert_tasks
        ):
            continue
        pending = state.pending_activities.get(sid)
        if pending is None or pending.cancel_requested:
            continue
        now = event.time
        mark_started(changes, event, identity, request_id=request_id)
        grants.append(
            ActivityTaskGrant(
                ActivityTaskToken(key, sid, 1), state.workflow_type, a, 1, now, now, now, ()
            )
        )
    return grants


def mark_started(
    changes: rows.RowChanges, scheduled: ev.Event, identity: str, *, request_id: str = ""
) -> None:
    """Turn the rows of an activity scheduled in this batch into attempt 1 *started* by
    ``identity``, exactly as ``DISPATCH_ACTIVITY`` would: no task row, no schedule-to-start
    timer, a start-to-close (and heartbeat) timer from the event's time. ``request_id``: the
    eager start's completion (``start_eagerly``); "" for an inline start (the worker runs it)."""
    a = scheduled.attributes
    assert isinstance(a, ev.ActivityScheduled)
    sid, now = scheduled.id, scheduled.time
    changes.remove_task(rows.ACTIVITY, sid)
    changes.insert_timers.pop((rows.ACT_SCHEDULE_TO_START, sid), None)
    started = replace(changes.insert_activities[sid], started_by=identity, request_id=request_id)
    changes.add_activity(started)
    # commands.py always records a start-to-close (given, schedule-to-close, or the server
    # default), as DISPATCH_ACTIVITY relies on too
    assert a.start_to_close_timeout is not None, "ActivityScheduled without start_to_close"
    changes.add_timer(rows.TimerRow(rows.ACT_START_TO_CLOSE, sid, now + a.start_to_close_timeout))
    if a.heartbeat_timeout is not None:
        changes.add_timer(rows.TimerRow(rows.ACT_HEARTBEAT, sid, now + a.heartbeat_timeout))


async def complete(
    services: Services,
    token_bytes: bytes,
    result: Payload | None,
    identity: str,
    *,
    eager_workflow_task: bool = False,
    request_id: str = "",
) -> grants.WorkflowTaskGrant | None:
    """Record the activity's result (exactly once).

    With ``eager_workflow_task``, a workflow task this result makes due for a run sticky to
    ``identity`` is started in the same transaction and returned (eager workflow task); its
    ``WorkflowTaskStarted`` records ``request_id`` (``lost_answers.py``).
    """
    token = decode_activity_token(token_bytes)
    limited = (
        await services.rate_limits.limited_queues(token.key.namespace)
        if eager_workflow_task
        else frozenset()
    )

    def callback(ctx: tr.Context) -> tr.Decision:
        info = _started(ctx, token)
        return tr.Decision(
            events=[
                ev.ActivityCompleted(
                    scheduled_event_id=info.scheduled_event_id,
                    result=result,
                    attempt=info.attempt,
                    identity=identity,
                )
            ]
        )

    def note_started(planned: tr.Planned) -> None:
        started.clear()  # only the latest attempt's write can have applied
        task = grants.started_for(token.key, planned.events, identity)
        if task is not None:
            started.append(task)

    async def body(conn: Conn) -> grants.WorkflowTaskGrant | None:
        outcome = await tr.transition(
            conn,
            token.key,
            callback,
            activity_ids=_locked_ids(token),
            start_workflow_task_for=(
                tr.EagerStart(identity, request_id) if eager_workflow_task else None
            ),
            finish=note_started if eager_workflow_task else None,
        )
        task = outcome.state.workflow_task
        if not eager_workflow_task or task is None or not task.started_event_id:
            return None
        if not any(e.id == task.started_event_id for e in outcome.events):
            return None
        after = outcome.previous.last_completed_started_event_id
        return await grants.grant(
            conn, token.key, outcome, after=after, rate_limited_queues=limited
        )

    # A workflow task started for this caller, whose answer may not reach it (the commit's
    # outcome is unknown, the call was cancelled), is timed out at once (``grants.unclaimed``).
    async with grants.unclaimed(services, "an activity completion's answer") as started:
        return await _in_transaction(services, token, body)


async def fail(services: Services, token_bytes: bytes, failure: Failure, identity: str) -> None:
    """An attempt failed: retry per the policy (no event), or record the final failure."""
    token = decode_activity_token(token_bytes)

    def callback(ctx: tr.Context) -> tr.Decision:
        info = _started(ctx, token)
        return attempt_failed(ctx, info, failure, identity=identity)

    await _run(services, token, callback)


async def heartbeat(
    services: Services,
    token_bytes: bytes,
    details: tuple[Payload, ...],
    identity: str,
    *,
    handed_off: bool = False,
) -> bool:
    """Record progress and push the heartbeat timeout; returns whether cancel was requested.

    ``handed_off``: the worker no longer runs the attempt (it completes asynchronously), so
    the attempt is no longer the worker's: a lost worker session does not time it out
    (``workers.worker_lost`` finds attempts by ``last_worker_identity``)."""
    token = decode_activity_token(token_bytes)

    def callback(ctx: tr.Context) -> tr.Decision:
        info = _started(ctx, token)
        decision = tr.Decision(
            activity_updates=[
                replace(
                    info,
                    last_heartbeat_time=ctx.now,
                    heartbeat_details=details or info.heartbeat_details,
                    last_worker_identity="" if handed_off else info.last_worker_identity,
                )
            ]
        )
        timeout = info.attributes.heartbeat_timeout
        if timeout is not None:
            decision.changes.add_timer(
                rows.TimerRow(
                    rows.ACT_HEARTBEAT, info.scheduled_event_id, ctx.now + timeout, info.attempt
                )
            )
        pending = ctx.state.pending_activities.get(info.scheduled_event_id)
        decision.result = bool(pending and pending.cancel_requested)
        return decision

    outcome = await _run(services, token, callback)
    return bool(outcome.decision.result)


def attempt_failed(
    ctx: tr.Context, info: ActivityInfo, failure: Failure, *, identity: str = ""
) -> tr.Decision:
    """The decision after an attempt failed or timed out: retry, or a final event. Pure."""
    sid = info.scheduled_event_id
    pending = ctx.state.pending_activities.get(sid)
    cancel_requested = bool(pending and pending.cancel_requested)
    if cancel_requested and failure.kind is FailureKind.CANCELLED:
        return tr.Decision(
            events=[
                ev.ActivityCanceled(
                    scheduled_event_id=sid, details=failure.details, attempt=info.attempt
                )
            ]
        )
    policy = info.attributes.retry_policy
    if not cancel_requested and policy.allows_retry(info.attempt, failure):
        delay = _backoff(policy, info.attempt)
        limit = info.attributes.schedule_to_close_timeout
        if limit is None or ctx.now + delay < info.scheduled_time + limit:
            retry_at = ctx.now + delay
            decision = tr.Decision(
                activity_updates=[
                    replace(
                        info,
                        state="backing_off",
                        attempt=info.attempt + 1,
                        last_failure=failure,
                        attempt_scheduled_time=retry_at,
                    )
                ]
            )
            decision.changes.remove_timer(rows.ACT_START_TO_CLOSE, sid)
            decision.changes.remove_timer(rows.ACT_HEARTBEAT, sid)
            decision.changes.remove_timer(rows.ACT_SCHEDULE_TO_START, sid)
            if info.state == "scheduled":  # schedule-to-start fired: the task is still queued
                decision.changes.remove_task(rows.ACTIVITY, sid)
            decision.changes.add_timer(
                rows.TimerRow(rows.ACT_RETRY, sid, retry_at, info.attempt + 1)
            )
            return decision
    if failure.kind is FailureKind.TIMEOUT:
        return tr.Decision(
            events=[
                ev.ActivityTimedOut(
                    scheduled_event_id=sid,
                    failure=failure,
                    timeout_type=failure.timeout_type or TimeoutType.START_TO_CLOSE,
                    attempt=info.attempt,
                )
            ]
        )
    return tr.Decision(
        events=[
            ev.ActivityFailed(
                scheduled_event_id=sid, failure=failure, attempt=info.attempt, identity=identity
            )
        ]
    )


def _backoff(policy: RetryPolicy, attempt: int) -> timedelta:
    """``policy.backoff`` that stays at the cap instead of overflowing on very long retries."""
    try:
        return policy.backoff(attempt)
    except OverflowError:
        return policy.effective_maximum_interval()


def timeout_failure(timeout_type: TimeoutType) -> Failure:
    """The failure recorded when an activity timeout fires."""
    return Failure(
        message=f"activity {timeout_type.value} timeout",
        type="TimeoutError",
        kind=FailureKind.TIMEOUT,
        timeout_type=timeout_type,
    )
