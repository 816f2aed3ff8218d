"""What happens when a durable timer row falls due: one callback per timer kind.

Each runs in the transaction that deleted the timer row, under the execution lock, and first
checks that the timer still concerns the run's current state (a task that was since completed,
an activity attempt that was since retried …); a moot timer changes nothing.
"""

from __future__ import annotations

from dataclasses import replace

from chronicle.history import codec
from chronicle.history import events as ev
from chronicle.history.values import Failure, FailureKind, TimeoutType
from chronicle.server.engine import activity_task, read
from chronicle.server.engine import tasks as rows
from chronicle.server.engine import transition as tr
from chronicle.server.store import sql
from chronicle.server.store.pool import Conn
from chronicle.server.store.rows import RunKey

_ACTIVITY_TIMEOUTS = {
    rows.ACT_START_TO_CLOSE: TimeoutType.START_TO_CLOSE,
    rows.ACT_HEARTBEAT: TimeoutType.HEARTBEAT,
    rows.ACT_SCHEDULE_TO_START: TimeoutType.SCHEDULE_TO_START,
    rows.ACT_SCHEDULE_TO_CLOSE: TimeoutType.SCHEDULE_TO_CLOSE,
}


async def fire(conn: Conn, key: RunKey, kind: str, ref_id: int, attempt: int) -> None:
    """Apply the timer ``kind`` about ``ref_id`` (attempt ``attempt``) to the run."""
    if kind == rows.CHILD_CLOSED:
        await _child_closed(conn, key, ref_id)
        return
    activity_ids = [ref_id] if kind in rows.ACTIVITY_TIMER_KINDS else []
    await tr.transition(conn, key, _callback(kind, ref_id, attempt), activity_ids=activity_ids)


async def _child_closed(conn: Conn, parent: RunKey, initiated: int) -> None:
    """Record the outcome of the child initiated at ``initiated`` once its last run closed.

    The child names the parent run that started it; if that run was reset since, its reset
    run (which keeps the child) is told instead."""
    while True:
        row = await conn.fetchrow(sql.LOCK_EXECUTION, *parent.params())
        if row is None:
            return
        state = codec.state_from_json(row["state"])
        if state.is_open:
            break
        successor = await conn.fetchval(sql.RESET_SUCCESSOR, *parent.params())
        if successor is None:
            return
        parent = RunKey(parent.namespace, parent.workflow_id, successor)
    child = state.pending_children.get(initiated)
    if child is None or not child.run_id:
        return
    # Follow the child's own chain of runs from the run it started as, not whatever run holds
    # its workflow id now: the id may already be reused by an unrelated run. A run goes on in
    # the run it continued as new into, or was reset into.
    child_key = RunKey(parent.namespace, child.workflow_id, child.run_id)
    while True:
        status = await read.run_outcome(conn, child_key)
        if status is None or status.close is None:
            return  # the chain goes on: its last run reports again
        attributes = status.close
        if isinstance(attributes, ev.WorkflowContinuedAsNew | ev.WorkflowFailed) and (
            attributes.new_run_id
        ):
            child_key = RunKey(parent.namespace, child.workflow_id, attributes.new_run_id)
            continue
        successor = await conn.fetchval(sql.RESET_SUCCESSOR, *child_key.params())
        if successor is None:
            break
        child_key = RunKey(parent.namespace, child.workflow_id, successor)
    outcome: ev.EventAttributes
    if isinstance(attributes, ev.WorkflowCompleted):
        outcome = ev.ChildWorkflowCompleted(initiated_event_id=initiated, result=attributes.result)
    else:
        outcome = ev.ChildWorkflowFailed(
            initiated_event_id=initiated,
            failure=Failure(
                message=f"child workflow '{child.workflow_id}' {status.status}",
                kind=FailureKind.CHILD_WORKFLOW,
                cause=read.close_failure(attributes),
            ),
        )

    def callback(ctx: tr.Context) -> tr.Decision:
        if not ctx.state.is_open or initiated not in ctx.state.pending_children:
            return tr.Decision()
        return tr.Decision(events=[outcome])

    await tr.transition(conn, parent, callback)


def _callback(kind: str, ref_id: int, attempt: int) -> tr.Callback:
    def callback(ctx: tr.Context) -> tr.Decision:
        state = ctx.state
        if not state.is_open:
            return tr.Decision()
        if kind == rows.WFT_TIMEOUT:
            return _workflow_task_timeout(ctx, ref_id)
        if kind == rows.WFT_RETRY:
            if state.workflow_task is not None:
                return tr.Decision()
            return tr.Decision(
                events=[
                    ev.WorkflowTaskScheduled(
                        task_queue=state.task_queue,
                        attempt=state.workflow_task_failures + 1,
                        start_to_close_timeout=state.workflow_task_timeout,
                    )
                ]
            )
        if kind == rows.START_DELAY:
            if state.workflow_task is not None or not state.awaiting_start_delay:
                return tr.Decision()
            return tr.Decision(
                events=[
                    ev.WorkflowTaskScheduled(
                        task_queue=state.task_queue,
                        start_to_close_timeout=state.workflow_task_timeout,
                    )
                ]
            )
        if kind == rows.USER_TIMER:
            if ref_id not in state.pending_timers:
                return tr.Decision()
            return tr.Decision(events=[ev.TimerFired(started_event_id=ref_id)])
        if kind in (rows.RUN_TIMEOUT, rows.EXECUTION_TIMEOUT):
            return tr.Decision(
                events=[
                    ev.WorkflowTimedOut(timeout="run" if kind == rows.RUN_TIMEOUT else "execution")
                ]
            )
        if kind == rows.ACT_RETRY:
            return _activity_retry(ctx, ref_id, attempt)
        if kind in _ACTIVITY_TIMEOUTS:
            return _activity_timeout(ctx, ref_id, attempt, _ACTIVITY_TIMEOUTS[kind])
        return tr.Decision()

    return callback


def _workflow_task_timeout(ctx: tr.Context, started_event_id: int) -> tr.Decision:
    task = ctx.state.workflow_task
    if task is None or task.started_event_id != started_event_id:
        return tr.Decision()
    return tr.Decision(
        events=[
            ev.WorkflowTaskTimedOut(
                scheduled_event_id=task.scheduled_event_id, started_event_id=started_event_id
            ),
            ev.WorkflowTaskScheduled(
                task_queue=ctx.state.task_queue,
                attempt=ctx.state.workflow_task_failures + 2,
                start_to_close_timeout=ctx.state.workflow_task_timeout,
            ),
        ],
        sticky_identity="",
    )


def _activity_retry(ctx: tr.Context, sid: int, attempt: int) -> tr.Decision:
    info = ctx.activities.get(sid)
    if info is None or info.state != "backing_off" or info.attempt != attempt:
        return tr.Decision()
    decision = tr.Decision(
        activity_updates=[replace(info, state="scheduled", attempt_scheduled_time=ctx.now)]
    )
    decision.changes.add_task(rows.TaskRow(rows.ACTIVITY, info.attributes.task_queue, sid))
    schedule_to_start = info.attributes.schedule_to_start_timeout
    if schedule_to_start is not None:
        decision.changes.add_timer(
            rows.TimerRow(rows.ACT_SCHEDULE_TO_START, sid, ctx.now + schedule_to_start, attempt)
        )
    return decision


def _activity_timeout(
    ctx: tr.Context, sid: int, attempt: int, timeout_type: TimeoutType
) -> tr.Decision:
    info = ctx.activities.get(sid)
    if info is None:
        return tr.Decision()

    def timed_out(kind: TimeoutType) -> tr.Decision:
        failure = activity_task.timeout_failure(kind)
        event = ev.ActivityTimedOut(
            scheduled_event_id=sid, failure=failure, timeout_type=kind, attempt=info.attempt
        )
        return tr.Decision(events=[event])

    if timeout_type is TimeoutType.SCHEDULE_TO_CLOSE:
        return timed_out(timeout_type)
    if timeout_type is TimeoutType.SCHEDULE_TO_START:
        # Armed per attempt (at schedule and at each retry): moot once that attempt started.
        if info.state != "scheduled" or info.attempt != attempt:
            return tr.Decision()
    elif info.state != "started" or info.attempt != attempt:
        return tr.Decision()
    limit = info.attributes.schedule_to_close_timeout
    if limit is not None and ctx.now >= info.scheduled_time + limit:
        # Due with the schedule-to-close timer (timers due together fire in any order; an
        # eagerly started attempt's default start-to-close is that very deadline): it wins.
        return timed_out(TimeoutType.SCHEDULE_TO_CLOSE)
    return activity_task.attempt_failed(ctx, info, activity_task.timeout_failure(timeout_type))
