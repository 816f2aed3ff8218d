"""Read models of runs: what ``Client.list`` yields and ``WorkflowHandle.describe`` returns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chronicle.history import wire
from chronicle.history.payloads import from_payload
from chronicle.history.state import RunStatus
from chronicle.history.values import Failure
from chronicle.protos.v1 import service_pb2

__all__ = [
    "PendingActivity",
    "PendingChild",
    "WorkflowDescription",
    "WorkflowExecution",
    "description_from_proto",
]


def _time(holder: object, field: str) -> datetime | None:
    return wire.timestamp_from_proto(holder, field)


def _failure(holder: object, field: str) -> Failure | None:
    if not holder.HasField(field):  # type: ignore[attr-defined]
        return None
    return wire.failure_from_proto(getattr(holder, field))


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowExecution:
    """One run as listed by :meth:`Client.list` (and the head of :class:`WorkflowDescription`)."""

    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    status: RunStatus
    start_time: datetime | None
    close_time: datetime | None
    history_length: int
    memo: dict[str, Any]
    parent_workflow_id: str
    parent_run_id: str
    first_run_id: str

    @classmethod
    def _from_proto(cls, info: service_pb2.WorkflowExecutionInfo) -> WorkflowExecution:
        try:
            status = RunStatus(info.status)
        except ValueError:
            status = RunStatus.RUNNING
        return cls(
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            workflow_type=info.workflow_type,
            task_queue=info.task_queue,
            status=status,
            start_time=_time(info, "start_time"),
            close_time=_time(info, "close_time"),
            history_length=info.history_length,
            memo={k: from_payload(wire.payload_from_proto(v)) for k, v in info.memo.items()},
            parent_workflow_id=info.parent_workflow_id,
            parent_run_id=info.parent_run_id,
            first_run_id=info.first_run_id,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingActivity:
    """An activity of a running workflow that has not reached its final outcome."""

    scheduled_event_id: int
    activity_id: str
    activity_type: str
    state: str
    attempt: int
    scheduled_time: datetime | None
    last_started_time: datetime | None
    last_heartbeat_time: datetime | None
    heartbeat_details: tuple[Any, ...]
    last_failure: Failure | None
    next_attempt_time: datetime | None
    last_worker_identity: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingChild:
    """A child workflow a running workflow started and still waits for."""

    workflow_id: str
    run_id: str
    workflow_type: str
    initiated_event_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowDescription(WorkflowExecution):
    """What :meth:`WorkflowHandle.describe` returns: the run plus what it is waiting for.

    ``last_workflow_task_failure`` is set while a failing workflow task holds the run up (a bug,
    nondeterminism, or no worker serving its type); ``workflow_task_attempt`` counts its retries.
    """

    pending_activities: tuple[PendingActivity, ...]
    pending_children: tuple[PendingChild, ...]
    last_workflow_task_failure: Failure | None
    workflow_task_attempt: int
    reset_from_run_id: str = ""
    """Set when a reset made this run: the run it was reset from (at ``reset_event_id``)."""
    reset_event_id: int = 0
    reset_to_run_id: str = ""
    """Set when a reset of this run made a newer run."""


def description_from_proto(response: service_pb2.DescribeWorkflowResponse) -> WorkflowDescription:
    head = WorkflowExecution._from_proto(response.info)
    activities = tuple(
        PendingActivity(
            scheduled_event_id=a.scheduled_event_id,
            activity_id=a.activity_id,
            activity_type=a.activity_type,
            state=a.state,
            attempt=a.attempt,
            scheduled_time=_time(a, "scheduled_time"),
            last_started_time=_time(a, "last_started_time"),
            last_heartbeat_time=_time(a, "last_heartbeat_time"),
            heartbeat_details=tuple(
                from_payload(wire.payload_from_proto(p)) for p in a.heartbeat_details
            ),
            last_failure=_failure(a, "last_failure"),
            next_attempt_time=_time(a, "next_attempt_time"),
            last_worker_identity=a.last_worker_identity,
        )
        for a in response.pending_activities
    )
    children = tuple(
        PendingChild(
            workflow_id=c.workflow_id,
            run_id=c.run_id,
            workflow_type=c.workflow_type,
            initiated_event_id=c.initiated_event_id,
        )
        for c in response.pending_children
    )
    fields = {name: getattr(head, name) for name in WorkflowExecution.__dataclass_fields__}
    return WorkflowDescription(
        **fields,
        pending_activities=activities,
        pending_children=children,
        last_workflow_task_failure=_failure(response, "last_workflow_task_failure"),
        workflow_task_attempt=response.workflow_task_attempt,
        reset_from_run_id=response.reset_from_run_id,
        reset_event_id=response.reset_event_id,
        reset_to_run_id=response.reset_to_run_id,
    )
