"""Workflow tasks: completion with commands, failure, continue-as-new (dispatch.py dispatches)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from chronicle.history import commands as cmd
from chronicle.history import events as ev
from chronicle.history.state import RunStatus, WorkflowState
from chronicle.history.values import Failure, Payload
from chronicle.server import errors, telemetry
from chronicle.server.engine import (
    activity_task,
    fastpath,
    grants,
    inline,
    next_run,
    outbound,
)
from chronicle.server.engine import commands as commands_mod
from chronicle.server.engine import transition as tr
from chronicle.server.engine.closes import RunOutcome
from chronicle.server.engine.services import Services
from chronicle.server.engine.tokens import WorkflowTaskToken, decode_workflow_token
from chronicle.server.store import notify
from chronicle.server.store import pool as db
from chronicle.server.store.pool import Conn
from chronicle.server.store.rows import RunKey

STALE_TASK = "workflow task not found: already completed, timed out, or the run closed"


def _check_token(state: WorkflowState, token: WorkflowTaskToken) -> None:
    task = state.workflow_task
    if (
        not state.is_open
        or task is None
        or task.started_event_id != token.started_event_id
        or task.scheduled_event_id != token.scheduled_event_id
    ):
        raise errors.NotFound(STALE_TASK)


@dataclass(frozen=True, slots=True)
class Completion:
    """What a workflow-task completion hands back to the completing worker."""

    activity_tasks: list[activity_task.ActivityTaskGrant]
    """Activities started eagerly for it (``activity_task.start_eagerly``)."""
    workflow_task: grants.WorkflowTaskGrant | None = None
    """The run's next workflow task, started for it (``eager_workflow_task``)."""


async def complete(
    services: Services,
    token_bytes: bytes,
    commands: Sequence[cmd.Command],
    *,
    identity: str,
    sdk_flags: Sequence[int] = (),
    eager_activity_types: Sequence[str] = (),
    max_eager_activities: int = 0,
    inline_results: Mapping[str, Payload | None] | None = None,
    inline_started: Sequence[str] = (),
    eager_workflow_task: bool = False,
    request_id: str = "",
) -> Completion:
    """Apply a worker's answer to a started workflow task (exactly once).

    Returns the activities started eagerly for ``identity`` (``activity_task.start_eagerly``):
    at most ``max_eager_activities`` of those the commands schedule, of the listed types.
    ``inline_results`` / ``inline_started``: activities the worker ran before this completion
    recorded them (``inline.py``). ``eager_workflow_task``: a workflow task this completion
    makes due is started for ``identity`` at once and returned; its ``WorkflowTaskStarted``
    records ``request_id``, as do the rows of the activities started eagerly
    (``lost_answers.py``).
    """
    token = decode_workflow_token(token_bytes)
    commands_mod.validate(commands)
    closes = commands_mod.has_close(commands)
    inline.validate(commands, inline_results or {}, inline_started, closes=closes)
    new_run_id = str(uuid.uuid4())
    failing = next((c for c in commands if isinstance(c, cmd.FailWorkflow)), None)
    # Only a failing run reads its WorkflowStarted (immutable): its retry policy decides.
    first = await next_run.started_event(services.pool, token.key) if failing is not None else None
    retry_after: list[timedelta | None] = [None]  # the back-off the last callback decided on

    def callback(ctx: tr.Context) -> tr.Decision:
        state = ctx.state
        _check_token(state, token)
        task = state.workflow_task
        assert task is not None
        if closes and state.last_workflow_visible_event_id > task.started_event_id:
            return tr.Decision(
                events=[
                    # the generic rule schedules the next task (fold: not a code failure)
                    ev.WorkflowTaskFailed(
                        scheduled_event_id=task.scheduled_event_id,
                        started_event_id=task.started_event_id,
                        cause=ev.WorkflowTaskFailedCause.UNHANDLED_EVENTS,
                        identity=identity,
                    ),
                ],
                sticky_identity="",
            )
        completed = ev.WorkflowTaskCompleted(
            scheduled_event_id=task.scheduled_event_id,
            started_event_id=task.started_event_id,
            identity=identity,
            sdk_flags=tuple(sdk_flags),
        )
        retry_after[0] = None
        if failing is not None and first is not None:
            retry_after[0] = next_run.retry_delay(first, state, failing.failure, ctx.now)
        command_events = commands_mod.to_events(
            state,
            commands,
            completed_event_id=state.next_event_id,
            activities=ctx.activities,
            new_run_id=new_run_id,
            retry_run_id=new_run_id if retry_after[0] is not None else "",
            config=services.config,
        )
        inline.check_fresh(state, [*(inline_results or {}), *inline_started])
        new = [completed, *command_events]
        new += inline.completed_events(state, new, inline_results or {}, identity=identity)
        return tr.Decision(events=new, sticky_identity=identity, last_workflow_task_failure=None)

    types = frozenset(eager_activity_types)
    eager = max_eager_activities > 0 and bool(types)
    # A rate-limited queue's activities go through its queue, whose dispatch enforces the limit
    # for every worker (a queue becomes limited when a worker polls it with a limit).
    limited = (
        await services.rate_limits.limited_queues(token.key.namespace)
        if eager or eager_workflow_task
        else frozenset()
    )

    def finish(planned: tr.Planned) -> list[activity_task.ActivityTaskGrant]:
        inline.mark_started(planned, inline_started, identity=identity)
        # What this write starts for the caller, taken back if the caller may not get it
        # (``unclaimed`` below); only the latest attempt's write can have applied.
        started_task.clear()
        started_activities.clear()
        task = grants.started_for(token.key, planned.events, identity)
        if eager_workflow_task and task is not None:
            started_task.append(task)
        if not eager:
            return []
        granted = activity_task.start_eagerly(
            planned,
            token.key,
            identity=identity,
            activity_types=types,
            limit=max_eager_activities,
            rate_limited_queues=limited,
            request_id=request_id,
        )
        if granted:
            eager_start = activity_task.EagerActivities.of(token.key, granted, identity)
            started_activities.append(eager_start)
        return granted

    def grants_task(outcome: tr.Outcome) -> bool:
        next_task = outcome.state.workflow_task
        return (
            eager_workflow_task
            and next_task is not None
            and next_task.started_event_id > 0
            and any(e.id == next_task.started_event_id for e in outcome.events)
        )

    written: list[tr.Outcome] = []  # the outcome of the attempt whose write applied

    async def after(conn: Conn, outcome: tr.Outcome) -> Completion:
        written[:] = [outcome]
        if outcome.state.status is RunStatus.CONTINUED_AS_NEW:
            await _continue_as_new(conn, token.key, outcome)
        elif outcome.state.status is RunStatus.FAILED and outcome.state.new_run_id:
            assert first is not None
            assert retry_after[0] is not None
            await _retry(conn, token.key, outcome, first, retry_after[0])
        await outbound.apply(conn, token.key, outcome, services.config)
        granted = None
        if grants_task(outcome):
            granted = await grants.grant(
                conn,
                token.key,
                outcome,
                after=token.started_event_id,
                rate_limited_queues=limited,
            )
        return Completion(list(outcome.extra or []), granted)

    def fast(outcome: tr.Outcome) -> bool:
        # ``after`` must do no I/O: no outbound effects, no older events for the grant to read
        # (a run that continues as new is closed: the fast path never takes it).
        return not any(isinstance(e.attributes, outbound.OUTBOUND) for e in outcome.events) and (
            not grants_task(outcome) or token.started_event_id + 1 >= outcome.previous.next_event_id
        )

    def cancel_targets(state: WorkflowState) -> list[int]:
        return commands_mod.cancel_targets(state, commands)

    start_for = tr.EagerStart(identity, request_id) if eager_workflow_task else None

    async def body(conn: Conn) -> Completion:
        outcome = await tr.transition(
            conn,
            token.key,
            callback,
            activity_ids=cancel_targets,
            finish=finish,
            start_workflow_task_for=start_for,
        )
        return await after(conn, outcome)

    # The tasks this completion starts for its caller (an eager workflow task, eager
    # activities) are taken back if the call raises: its commit's outcome unknown, or the
    # caller gone (docs/decisions.md 13 and 18).
    with contextlib.ExitStack() as close_in_flight:
        publish = (
            close_in_flight.enter_context(services.closes.closing(token.key)) if closes else None
        )
        async with (
            grants.unclaimed(services, "a completion's answer") as started_task,
            activity_task.unclaimed_eager(services) as started_activities,
        ):
            completion: Completion | None = None
            if services.config.fast_path:
                async with services.pool.acquire() as conn:
                    outcome = await fastpath.try_transition(
                        conn,
                        token.key,
                        callback,
                        activity_ids=cancel_targets,
                        finish=finish,
                        start_workflow_task_for=start_for,
                        eligible=fast,
                        known=services.known_rows,
                    )
                    if outcome is not None:
                        completion = await after(conn, outcome)
            if completion is None:
                completion = await db.in_transaction(services.pool, body)
        if publish is not None and not written[0].state.is_open:
            # committed: result waiters here take the outcome from memory (closes.py)
            publish(_closed_outcome(written[0]))
    if closes:
        # Result waiters on this server learn at once; Postgres's NOTIFY, delivered on the
        # listening connection a little later, still tells the other servers.
        services.notifier.wake(notify.RUN_CHANNEL, notify.closed_key(*token.key.params()))
        telemetry.run_logger(*token.key.params()).info("workflow closed")
    return completion


def _closed_outcome(outcome: tr.Outcome) -> RunOutcome:
    """What a result waiter reads of a run that ``outcome`` closed: its last event closes it."""
    return RunOutcome(
        outcome.state.status.value, outcome.state.new_run_id or None, outcome.events[-1].attributes
    )


async def _continue_as_new(conn: Conn, key: RunKey, outcome: tr.Outcome) -> None:
    closing = outcome.events[-1].attributes
    assert isinstance(closing, ev.WorkflowContinuedAsNew)
    await next_run.continue_run(
        conn,
        key,
        outcome,
        new_run_id=closing.new_run_id,
        workflow_type=closing.workflow_type,
        task_queue=closing.task_queue,
        input=closing.input,
    )


async def _retry(
    conn: Conn, key: RunKey, outcome: tr.Outcome, started: ev.WorkflowStarted, delay: timedelta
) -> None:
    closing = outcome.events[-1].attributes
    assert isinstance(closing, ev.WorkflowFailed)
    await next_run.continue_run(
        conn,
        key,
        outcome,
        new_run_id=closing.new_run_id,
        workflow_type=started.workflow_type,
        task_queue=started.task_queue,
        input=started.input,
        attempt=started.attempt + 1,
        start_delay=delay,
    )


async def fail(
    services: Services, token_bytes: bytes, *, cause: str, failure: Failure | None, identity: str
) -> None:
    """Record a failed workflow task; a retry is scheduled after a back-off (tasks.derive)."""
    token = decode_workflow_token(token_bytes)
    try:
        reason = ev.WorkflowTaskFailedCause(cause or "workflow_error")
    except ValueError:
        known = ", ".join(c.value for c in ev.WorkflowTaskFailedCause)
        raise errors.InvalidArgument(
            f"unknown cause {cause!r} (known: {known})", field="cause"
        ) from None
    stored = failure or Failure(message=f"workflow task failed: {reason.value}")

    def callback(ctx: tr.Context) -> tr.Decision:
        _check_token(ctx.state, token)
        return tr.Decision(
            events=[
                ev.WorkflowTaskFailed(
                    scheduled_event_id=token.scheduled_event_id,
                    started_event_id=token.started_event_id,
                    cause=reason,
                    failure=failure,
                    identity=identity,
                )
            ],
            sticky_identity="",
            last_workflow_task_failure=stored,
        )

    async def body(conn: Conn) -> None:
        await tr.transition(conn, token.key, callback)

    await db.in_transaction(services.pool, body)
    telemetry.run_logger(*token.key.params()).warning(
        "workflow task failed", cause=reason.value, message=stored.message
    )
