"""StartWorkflow (with signal-with-start and id policies) and creating a run (also for
continue-as-new)."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from chronicle.history import events as ev
from chronicle.history.state import RunStatus, WorkflowState
from chronicle.history.values import Payload, RetryPolicy
from chronicle.server import errors, telemetry
from chronicle.server.engine import commands as commands_mod
from chronicle.server.engine import current_run, grants, limits
from chronicle.server.engine import transition as tr
from chronicle.server.engine.services import Services
from chronicle.server.store import pool as db
from chronicle.server.store import sql
from chronicle.server.store.pool import Conn
from chronicle.server.store.rows import RunKey, memo_to_json

CONFLICT_POLICIES = ("fail", "use_existing", "terminate_existing")
REUSE_POLICIES = ("allow_duplicate", "allow_duplicate_failed_only", "reject_duplicate")
_FAILED_STATUSES = {
    RunStatus.FAILED.value,
    RunStatus.CANCELED.value,
    RunStatus.TERMINATED.value,
    RunStatus.TIMED_OUT.value,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class StartRequest:
    """A decoded StartWorkflow request."""

    namespace: str
    workflow_id: str
    workflow_type: str
    task_queue: str
    input: tuple[Payload, ...] = ()
    request_id: str = ""
    id_conflict_policy: str = ""
    id_reuse_policy: str = ""
    execution_timeout: timedelta | None = None
    run_timeout: timedelta | None = None
    workflow_task_timeout: timedelta | None = None
    start_delay: timedelta | None = None
    retry_policy: RetryPolicy | None = None
    memo: dict[str, Payload] = field(default_factory=dict)
    search_attributes: dict[str, Payload] = field(default_factory=dict)
    signal_name: str = ""
    signal_input: tuple[Payload, ...] = ()
    identity: str = ""


@dataclass(frozen=True, slots=True)
class StartOutcome:
    """What a start answers: the run, whether this call started it, and its chain's first run
    (the run itself when started; an existing run's chain may have begun earlier)."""

    run_id: str
    started: bool
    first_run_id: str


def validate(request: StartRequest) -> None:
    """Reject a malformed start before anything is read or written."""
    for name in ("workflow_id", "workflow_type", "task_queue"):
        if not getattr(request, name):
            raise errors.InvalidArgument(f"{name} is required", field=name)
    if request.id_conflict_policy and request.id_conflict_policy not in CONFLICT_POLICIES:
        raise errors.InvalidArgument(
            f"unknown id_conflict_policy {request.id_conflict_policy!r} "
            f"(known: {', '.join(CONFLICT_POLICIES)})",
            field="id_conflict_policy",
        )
    if request.id_reuse_policy and request.id_reuse_policy not in REUSE_POLICIES:
        raise errors.InvalidArgument(
            f"unknown id_reuse_policy {request.id_reuse_policy!r} "
            f"(known: {', '.join(REUSE_POLICIES)})",
            field="id_reuse_policy",
        )
    for name in ("execution_timeout", "run_timeout", "workflow_task_timeout"):
        value = getattr(request, name)
        if value is not None and value <= timedelta(0):
            raise errors.InvalidArgument(f"{name} must be positive", field=name)
    if request.start_delay is not None and request.start_delay < timedelta(0):
        raise errors.InvalidArgument("start_delay must not be negative", field="start_delay")
    for name in ("execution_timeout", "run_timeout", "workflow_task_timeout", "start_delay"):
        limits.check_duration(getattr(request, name), name)
    if request.retry_policy is not None:
        commands_mod.check_retry_policy(request.retry_policy, "retry_policy")


async def start_workflow(services: Services, request: StartRequest) -> StartOutcome:
    """Start a run (or return the existing one per the policies).

    When a workflow-task poll waits on the run's queue on this server, the run's first task is
    started for it in the same commit and handed to it (sync match, ``matching/handoff.py``).
    """
    validate(request)
    ns, queue = request.namespace, request.task_queue
    limited = await services.rate_limits.limited_queues(ns)
    poller = services.handoff.take(ns, queue)
    handed: list[grants.WorkflowTaskGrant] = []

    hand_to = tr.EagerStart(poller.identity, poller.request_id) if poller is not None else None

    async def body(conn: Conn) -> StartOutcome:
        handed.clear()
        return await _start(conn, services, request, hand_to, limited, handed)

    delivered = False
    try:
        result = await _create_alone(services, request, hand_to, limited, handed)
        if result is None:
            result = await db.in_transaction(
                services.pool, body, retry_on=(asyncpg.exceptions.UniqueViolationError,)
            )
        if poller is not None and handed:
            delivered = services.handoff.deliver(poller, handed[0])
    finally:
        if poller is not None and not delivered:
            services.handoff.give_back(ns, queue, poller)
            if handed:
                # Started for a poll that ended, or the commit's outcome is unknown (this call
                # was cancelled or failed during COMMIT): time the task out so it is retried.
                # Harmless when the transaction rolled back (no such timer).
                task = grants.StartedTask.of_grant(handed[0], poller.identity)
                await asyncio.shield(grants.expire_unclaimed(services, task, "start handed it"))
    return result


async def _start(
    conn: Conn,
    services: Services,
    request: StartRequest,
    hand_to: tr.EagerStart | None,
    limited: frozenset[str],
    handed: list[grants.WorkflowTaskGrant],
) -> StartOutcome:
    ns, wid = request.namespace, request.workflow_id
    # The current run's execution row, then the current row (docs/decisions.md §15): a
    # terminate or signal below then waits for nothing a close of that run could hold.
    current = await current_run.lock(conn, ns, wid)
    if current is not None:
        run_id, status = current.run_id, current.status
        existing = StartOutcome(run_id, False, current.first_run_id)
        if request.request_id and current.start_request_id == request.request_id:
            return existing
        if status == RunStatus.RUNNING.value:
            policy = request.id_conflict_policy or "fail"
            if policy == "use_existing":
                if request.signal_name:
                    await _signal(conn, RunKey(ns, wid, run_id), request)
                return existing
            if policy == "fail":
                raise errors.AlreadyExists(
                    f"workflow id '{wid}' is already running (run id {run_id})"
                )
            await tr.transition(conn, RunKey(ns, wid, run_id), _terminate_for(request))
        else:
            reuse = request.id_reuse_policy or "allow_duplicate"
            if reuse == "reject_duplicate" or (
                reuse == "allow_duplicate_failed_only" and status not in _FAILED_STATUSES
            ):
                raise errors.AlreadyExists(
                    f"workflow id '{wid}' was already used (run id {run_id}, status {status}) "
                    f"and id_reuse_policy is {reuse}"
                )
    key, started, extra, planned = _first_transition(services, request, hand_to)
    await create_run(
        conn,
        key,
        started,
        extra,
        planned.events[0].time,
        replace_current=current is not None,
        planned=planned,
    )
    handed[:] = _handed_grants(key, planned, limited)
    _log_started(key, started)
    return StartOutcome(key.run_id, True, key.run_id)


async def _create_alone(
    services: Services,
    request: StartRequest,
    hand_to: tr.EagerStart | None,
    limited: frozenset[str],
    handed: list[grants.WorkflowTaskGrant],
) -> StartOutcome | None:
    """Start a run of a workflow id that has no current run in one autocommit statement (the
    common case: ``transition.write(new_run=...)``). None, having written nothing, when the id
    has a current run: then the locked path (``_start``) applies the id policies.

    A first task started for a waiting poll is in ``handed`` before the write, so that a write
    whose outcome is unknown (cancelled, connection lost) still releases it. Once written, the
    run's row goes into the known rows when a poll was handed the task: the worker's
    completion of that task is the run's next write, and skips reading the row back.
    """
    key, started, _, planned = _first_transition(services, request, hand_to)
    new_run = tr.NewRun(
        started.workflow_type,
        started.task_queue,
        planned.events[0].time,
        memo_to_json(started.memo),
        started.request_id,
    )
    handed[:] = _handed_grants(key, planned, limited)
    try:
        async with services.pool.acquire() as conn:
            written = await tr.write(
                conn, key, planned, sticky_identity="", last_failure=None, new_run=new_run
            )
    except db.RETRYABLE:  # the statement failed: nothing was written
        written = None
    if written is None:
        handed.clear()
        return None
    if handed and written.version is not None:
        services.known_rows.remember(
            key,
            version=written.version,
            state=planned.state,
            sticky_identity="",
            last_workflow_task_failure=None,
            has_parent=False,
        )
    _log_started(key, started)
    return StartOutcome(key.run_id, True, key.run_id)


def _first_transition(
    services: Services, request: StartRequest, hand_to: tr.EagerStart | None
) -> tuple[RunKey, ev.WorkflowStarted, list[ev.EventAttributes], tr.Planned]:
    """A new run of ``request``: its key, ``WorkflowStarted``, the events beside it (a
    signal-with-start's signal) and their planned transition."""
    ns, wid = request.namespace, request.workflow_id
    run_id = str(uuid.uuid4())
    started = ev.WorkflowStarted(
        workflow_type=request.workflow_type,
        task_queue=request.task_queue,
        input=request.input,
        workflow_task_timeout=(
            request.workflow_task_timeout or services.config.default_workflow_task_timeout
        ),
        execution_timeout=request.execution_timeout,
        run_timeout=request.run_timeout,
        retry_policy=request.retry_policy,
        random_seed=random.getrandbits(63),
        memo=dict(request.memo),
        search_attributes=dict(request.search_attributes),
        first_run_id=run_id,
        identity=request.identity,
        request_id=request.request_id,
        start_delay=request.start_delay if request.start_delay else None,
    )
    extra: list[ev.EventAttributes] = []
    if request.signal_name:
        extra.append(
            ev.SignalReceived(
                signal_name=request.signal_name,
                input=request.signal_input,
                identity=request.identity,
            )
        )
    key = RunKey(ns, wid, run_id)
    planned = tr.plan(
        WorkflowState(), [started, *extra], tr.utcnow(), sticky_identity="", hand_to=hand_to
    )
    return key, started, extra, planned


def _handed_grants(
    key: RunKey, planned: tr.Planned, limited: frozenset[str]
) -> list[grants.WorkflowTaskGrant]:
    """The grant of a new run's first task when ``planned`` started it for a waiting poll
    (sync match), from memory: a new run's every event is in ``planned``."""
    task = planned.state.workflow_task
    if task is None or not task.started_event_id:
        return []
    outcome = tr.Outcome(
        decision=tr.Decision(),
        state=planned.state,
        events=planned.events,
        previous=WorkflowState(),
        events_json=planned.events_json,
    )
    return [grants.assemble(key, outcome, after=0, older=[], rate_limited_queues=limited)]


def _log_started(key: RunKey, started: ev.WorkflowStarted) -> None:
    telemetry.run_logger(*key.params()).info(
        "workflow started", workflow_type=started.workflow_type
    )


def _terminate_for(request: StartRequest) -> tr.Callback:
    def callback(ctx: tr.Context) -> tr.Decision:
        if not ctx.state.is_open:
            return tr.Decision()
        return tr.Decision(
            events=[
                ev.WorkflowTerminated(
                    reason="terminated by a start with id_conflict_policy terminate_existing",
                    identity=request.identity,
                )
            ]
        )

    return callback


async def _signal(conn: Conn, key: RunKey, request: StartRequest) -> None:
    """The start's signal to the running run it uses (once per non-empty request id, as
    ``SignalWorkflow``: a retried signal-with-start records it once)."""
    # Duplicates are serialised by the run's row, locked by ``current_run.lock``.
    if request.request_id and await conn.fetchval(
        sql.SIGNAL_SEEN, *key.params(), request.request_id
    ):
        return

    def callback(ctx: tr.Context) -> tr.Decision:
        return tr.Decision(
            events=[
                ev.SignalReceived(
                    signal_name=request.signal_name,
                    input=request.signal_input,
                    identity=request.identity,
                    request_id=request.request_id,
                )
            ]
        )

    await tr.transition(conn, key, callback)


async def create_run(
    conn: Conn,
    key: RunKey,
    started: ev.WorkflowStarted,
    extra: list[ev.EventAttributes],
    now: datetime,
    *,
    replace_current: bool,
    planned: tr.Planned | None = None,
) -> WorkflowState:
    """Insert a new run (execution + current execution rows, its first events and tasks).

    Runs in the caller's transaction. ``replace_current``: the workflow id has a current row
    (locked by the caller, or updated by it when the previous run closed) to point at this run;
    otherwise one is inserted, and a concurrent start of the same id fails on it. ``planned``
    (a reset run's copied history) replaces planning ``started`` and ``extra`` at ``now``.
    """
    if planned is None:
        planned = tr.plan(WorkflowState(), [started, *extra], now, sticky_identity="")
    parent: Any = started.parent
    await conn.execute(
        sql.INSERT_EXECUTION,
        *key.params(),
        started.workflow_type,
        started.task_queue,
        now,
        memo_to_json(started.memo),
        parent.namespace if parent else None,
        parent.workflow_id if parent else None,
        parent.run_id if parent else None,
        parent.initiated_event_id if parent else None,
        started.first_run_id or key.run_id,
        started.request_id,
    )
    await conn.execute(
        sql.REPLACE_CURRENT if replace_current else sql.INSERT_CURRENT,
        *key.params(),
        started.request_id,
    )
    await tr.write(conn, key, planned, sticky_identity="", last_failure=None)
    return planned.state
