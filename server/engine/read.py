"""Read-only RPCs: describe, history (with long poll), result (long poll), list.

They read without locks; each answer is consistent because history rows of a run are only
appended, and the execution row is read before the events it bounds.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime, timedelta
from typing import Any

from chronicle.history import codec, wire
from chronicle.history import events as ev
from chronicle.history.state import RunStatus
from chronicle.history.values import Failure, FailureKind
from chronicle.protos.v1 import history_pb2, service_pb2
from chronicle.server import errors
from chronicle.server.engine import list_query, watch
from chronicle.server.engine.closes import RunOutcome
from chronicle.server.engine.services import Services
from chronicle.server.store import notify, sql
from chronicle.server.store.pool import Conn, Pool
from chronicle.server.store.rows import (
    ActivityInfo,
    RunKey,
    StoredEvent,
    failure_from_json,
    memo_from_json,
)

HISTORY_PAGE = 1000
"""Most events one GetWorkflowHistory answer carries (the caller continues from the last)."""

_NO_LIMIT = 2**62


def not_found(workflow_id: str, run_id: str = "") -> errors.NotFound:
    """The NotFound error for an unknown workflow id (or run)."""
    if run_id:
        return errors.NotFound(f"workflow '{workflow_id}' run '{run_id}' not found")
    return errors.NotFound(f"workflow '{workflow_id}' not found")


async def resolve_run(
    db: Conn | Pool, namespace: str, workflow_id: str, run_id: str, first_run_id: str = ""
) -> RunKey:
    """The run named by ``run_id``, or the current run of ``workflow_id`` when it is empty.

    ``first_run_id`` (a request's ``first_execution_run_id``): that run must belong to the
    chain of runs ``first_run_id`` started, else ``NotFound`` (``not_in_chain``). Checked on
    the run returned, whose chain never changes, so a caller that acts on this key (or follows
    it with ``transition_latest``, which stays in its chain) acts on that chain only.
    """
    if not first_run_id:
        if run_id:
            return RunKey(namespace, workflow_id, run_id)
        current = await db.fetchrow(sql.GET_CURRENT, namespace, workflow_id)
        if current is None:
            raise not_found(workflow_id)
        return RunKey(namespace, workflow_id, current["run_id"])
    row = await db.fetchrow(sql.GET_RUN_CHAIN, namespace, workflow_id, run_id)
    if row is None:
        raise not_found(workflow_id, run_id)
    if row["first_run_id"] != first_run_id:
        raise not_in_chain(workflow_id, run_id, first_run_id, row["run_id"], row["first_run_id"])
    return RunKey(namespace, workflow_id, row["run_id"])


def not_in_chain(
    workflow_id: str, run_id: str, first_run_id: str, found_run_id: str, found_first_run_id: str
) -> errors.NotFound:
    """The NotFound error for a run (``found_run_id``, the named or current one) that is not of
    the chain of runs ``first_run_id`` started; it names the request's field, whose value may be
    no run at all (garbage, a NUL: compared, never stored)."""
    if run_id:
        return errors.NotFound(
            f"workflow '{workflow_id}' run '{run_id}' not found in the chain of runs started by "
            f"run '{first_run_id}' (first_execution_run_id; its chain was started by run "
            f"{found_first_run_id})"
        )
    now = (
        f"its current run {found_run_id} started a chain of its own"
        if found_run_id == found_first_run_id
        else f"its current run {found_run_id} is of the chain started by run {found_first_run_id}"
    )
    return errors.NotFound(
        f"workflow '{workflow_id}' not found for first_execution_run_id: the chain of runs "
        f"started by run '{first_run_id}' has ended (or never existed), and the id now names "
        "another workflow "
        f"({now})"
    )


def closed_run(
    workflow_id: str, run_id: str, status: str, first_run_id: str = ""
) -> errors.NotFound:
    """The NotFound error for a change to a closed run (the last of its chain when the caller
    followed a chain: ``first_run_id``)."""
    if first_run_id:
        return errors.NotFound(
            f"workflow '{workflow_id}' not found: the chain of runs started by run "
            f"'{first_run_id}' has ended: its last run {run_id} is already closed ({status})"
        )
    return errors.NotFound(
        f"workflow '{workflow_id}' not found: run {run_id} is already closed ({status})"
    )


async def fetch_events(
    db: Conn | Pool, key: RunKey, first: int, end: int, limit: int = _NO_LIMIT
) -> list[StoredEvent]:
    """Events with ``first <= id < end``, oldest first, at most ``limit``."""
    rows = await db.fetch(sql.GET_EVENTS, *key.params(), first, end, limit)
    return [StoredEvent.from_record(row) for row in rows]


def event_to_proto(event: StoredEvent) -> history_pb2.HistoryEvent:
    """A stored event as its wire message (the JSON attributes are passed through)."""
    return history_pb2.HistoryEvent(
        event_id=event.event_id,
        event_type=event.event_type,
        time=wire.timestamp_to_proto(event.event_time),
        attributes=event.attributes.encode(),
    )


def _set_time(message: Any, name: str, value: datetime | None) -> None:
    if value is not None:
        getattr(message, name).CopyFrom(wire.timestamp_to_proto(value))


def _execution_info(key: RunKey, row: Any) -> service_pb2.WorkflowExecutionInfo:
    info = service_pb2.WorkflowExecutionInfo(
        workflow_id=key.workflow_id,
        run_id=key.run_id,
        workflow_type=row["workflow_type"],
        task_queue=row["task_queue"],
        status=row["status"],
        history_length=row["next_event_id"] - 1,
        parent_workflow_id=row["parent_workflow_id"] or "",
        parent_run_id=row["parent_run_id"] or "",
        first_run_id=row["first_run_id"],
    )
    _set_time(info, "start_time", row["start_time"])
    _set_time(info, "close_time", row["close_time"])
    for name, payload in memo_from_json(row["memo"]).items():
        info.memo[name].CopyFrom(wire.payload_to_proto(payload))
    return info


def _activity_info(info: ActivityInfo, cancel_requested: bool) -> service_pb2.PendingActivityInfo:
    message = service_pb2.PendingActivityInfo(
        scheduled_event_id=info.scheduled_event_id,
        activity_id=info.attributes.activity_id,
        activity_type=info.attributes.activity_type,
        state="cancel_requested" if cancel_requested else info.state,
        attempt=info.attempt,
        heartbeat_details=wire.payloads_to_proto(info.heartbeat_details),
        last_worker_identity=info.last_worker_identity,
    )
    _set_time(message, "scheduled_time", info.scheduled_time)
    _set_time(message, "last_started_time", info.started_time)
    _set_time(message, "last_heartbeat_time", info.last_heartbeat_time)
    if info.state == "backing_off":
        _set_time(message, "next_attempt_time", info.attempt_scheduled_time)
    if info.last_failure is not None:
        message.last_failure.CopyFrom(wire.failure_to_proto(info.last_failure))
    return message


async def describe(
    services: Services, namespace: str, workflow_id: str, run_id: str, first_run_id: str = ""
) -> service_pb2.DescribeWorkflowResponse:
    """DescribeWorkflow: execution info, pending activities/children, workflow-task trouble
    (of a run of ``first_run_id``'s chain only, when given: ``resolve_run``)."""
    pool = services.pool
    key = await resolve_run(pool, namespace, workflow_id, run_id, first_run_id)
    async with pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
        row = await conn.fetchrow(sql.GET_EXECUTION, *key.params())
        if row is None:
            raise not_found(workflow_id, run_id)
        activity_rows = await conn.fetch(sql.LIST_ACTIVITIES, *key.params())
    state = codec.state_from_json(row["state"])
    response = service_pb2.DescribeWorkflowResponse(info=_execution_info(key, row))
    for activity_row in activity_rows:
        info = ActivityInfo.from_record(activity_row)
        pending = state.pending_activities.get(info.scheduled_event_id)
        response.pending_activities.append(
            _activity_info(info, bool(pending and pending.cancel_requested))
        )
    for child in state.pending_children.values():
        response.pending_children.append(
            service_pb2.PendingChildInfo(
                workflow_id=child.workflow_id,
                run_id=child.run_id,
                workflow_type=child.workflow_type,
                initiated_event_id=child.initiated_event_id,
            )
        )
    failure = failure_from_json(row["last_workflow_task_failure"])
    if failure is not None and state.workflow_task_failures:
        response.last_workflow_task_failure.CopyFrom(wire.failure_to_proto(failure))
    if state.workflow_task is not None:
        response.workflow_task_attempt = state.workflow_task.attempt
    await _reset_links(pool, key, response)
    return response


async def _reset_links(
    pool: Pool, key: RunKey, response: service_pb2.DescribeWorkflowResponse
) -> None:
    """The runs a reset links this run to: the one it was reset from, the one it was reset to."""
    row = await pool.fetchrow(sql.GET_RESET_LINKS, *key.params())
    if row is not None:
        response.reset_from_run_id = row["reset_from_run_id"] or ""
        response.reset_event_id = row["reset_event_id"] or 0
        response.reset_to_run_id = row["reset_to_run_id"] or ""


async def get_history(
    services: Services,
    namespace: str,
    workflow_id: str,
    run_id: str,
    first_event_id: int,
    wait: timedelta | None,
    first_run_id: str = "",
) -> service_pb2.GetWorkflowHistoryResponse:
    """GetWorkflowHistory: a page of events from ``first_event_id``; long-polls with ``wait``
    (of a run of ``first_run_id``'s chain only, when given: ``resolve_run``)."""
    pool = services.pool
    key = await resolve_run(pool, namespace, workflow_id, run_id, first_run_id)
    first = max(first_event_id, 1)

    async def attempt() -> service_pb2.GetWorkflowHistoryResponse | None:
        row = await pool.fetchrow(sql.GET_EXECUTION_STATUS, *key.params())
        if row is None:
            raise not_found(workflow_id, run_id)
        end = row["next_event_id"]
        events = await fetch_events(pool, key, first, end, HISTORY_PAGE)
        closed = row["status"] != RunStatus.RUNNING.value
        last = events[-1].event_id if events else first - 1
        if not events and not closed and wait:
            return None
        return service_pb2.GetWorkflowHistoryResponse(
            events=[event_to_proto(e) for e in events],
            run_id=key.run_id,
            closed=closed and last >= end - 1,
        )

    if not wait:
        result = await attempt()
        assert result is not None
        return result
    found = await watch.long_poll_run(services, key, attempt, wait.total_seconds())
    if found is not None:
        return found
    return service_pb2.GetWorkflowHistoryResponse(run_id=key.run_id, closed=False)


async def get_result(
    services: Services,
    namespace: str,
    workflow_id: str,
    run_id: str,
    follow_runs: bool,
    wait: float,
) -> service_pb2.GetWorkflowResultResponse:
    """GetWorkflowResult: long-poll until the run (or its last continued run) closes."""
    pool = services.pool
    key = await resolve_run(pool, namespace, workflow_id, run_id)
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        current = key
        remaining = max(deadline - asyncio.get_running_loop().time(), 0.0)

        async def attempt(current: RunKey = current) -> RunOutcome | None:
            # a close being written here answers without a read (closes.py)
            outcome = await services.closes.outcome(current) or await run_outcome(pool, current)
            if outcome is None:
                raise not_found(current.workflow_id, current.run_id)
            return None if outcome.running else outcome

        found = await services.notifier.long_poll(
            notify.RUN_CHANNEL, notify.closed_key(*current.params()), attempt, remaining
        )
        if found is None:
            return service_pb2.GetWorkflowResultResponse(closed=False, run_id=current.run_id)
        if follow_runs and found.new_run_id:  # continued as new, or failed and retried
            key = RunKey(namespace, workflow_id, found.new_run_id)
            continue
        return _result(current, found)


def close_failure(attributes: ev.EventAttributes) -> Failure | None:
    """The failure a close event stands for (None for completion and continue-as-new)."""
    if isinstance(attributes, ev.WorkflowFailed):
        return attributes.failure
    if isinstance(attributes, ev.WorkflowCanceled):
        return Failure(
            message="workflow cancelled", kind=FailureKind.CANCELLED, details=attributes.details
        )
    if isinstance(attributes, ev.WorkflowTerminated):
        return Failure(
            message=attributes.reason or "workflow terminated", kind=FailureKind.TERMINATED
        )
    if isinstance(attributes, ev.WorkflowTimedOut):
        return Failure(message=f"workflow {attributes.timeout} timeout", kind=FailureKind.TIMEOUT)
    return None


async def run_outcome(db: Conn | Pool, key: RunKey) -> RunOutcome | None:
    """The run's status and close event (one round trip); None when the run does not exist."""
    row = await db.fetchrow(sql.GET_EXECUTION_OUTCOME, *key.params())
    if row is None:
        return None
    close = None
    if row["status"] != RunStatus.RUNNING.value:
        assert row["close_type"] is not None, f"closed run {key} has no close event"
        close = codec.decode_attributes(row["close_type"], row["close_attributes"])
    return RunOutcome(row["status"], row["new_run_id"], close)


def _result(key: RunKey, outcome: RunOutcome) -> service_pb2.GetWorkflowResultResponse:
    attributes = outcome.close
    assert attributes is not None
    response = service_pb2.GetWorkflowResultResponse(
        closed=True, status=outcome.status, run_id=key.run_id
    )
    if isinstance(attributes, ev.WorkflowCompleted) and attributes.result is not None:
        response.result.CopyFrom(wire.payload_to_proto(attributes.result))
    elif isinstance(attributes, ev.WorkflowContinuedAsNew):
        response.next_run_id = attributes.new_run_id
    failure = close_failure(attributes)
    if failure is not None:
        response.failure.CopyFrom(wire.failure_to_proto(failure))
    return response


async def list_workflows(
    services: Services, namespace: str, query: str, page_size: int, page_token: bytes
) -> service_pb2.ListWorkflowsResponse:
    """ListWorkflows: runs matching ``query``, newest first, paged by (start_time, run_id)."""
    where = list_query.parse(query)
    size = page_size if page_size > 0 else 100
    after_time: datetime | None = None
    after_run = ""
    if page_token:
        try:
            data = json.loads(base64.urlsafe_b64decode(page_token))
            after_time, after_run = datetime.fromisoformat(data["t"]), str(data["r"])
        except (ValueError, KeyError, TypeError):
            raise errors.InvalidArgument(
                "next_page_token is malformed", field="next_page_token"
            ) from None
    response = service_pb2.ListWorkflowsResponse()
    if where.impossible:
        return response
    rows = await services.pool.fetch(
        sql.LIST_EXECUTIONS,
        namespace,
        where.status,
        where.workflow_type,
        where.task_queue,
        where.workflow_id,
        after_time,
        after_run,
        size + 1,
    )
    for row in rows[:size]:
        key = RunKey(namespace, row["workflow_id"], row["run_id"])
        response.executions.append(_execution_info(key, row))
    if len(rows) > size:
        last = rows[size - 1]
        response.next_page_token = base64.urlsafe_b64encode(
            json.dumps({"t": last["start_time"].isoformat(), "r": last["run_id"]}).encode()
        )
    return response
