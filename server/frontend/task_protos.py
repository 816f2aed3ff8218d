"""The task messages a worker receives: workflow, query and activity tasks, from their grants."""

from __future__ import annotations

from chronicle.history import wire
from chronicle.protos.v1 import common_pb2, service_pb2
from chronicle.server.engine import activity_task as activity_task_mod
from chronicle.server.engine import grants, read
from chronicle.server.matching.queries import QueryGrant


def query_task(grant: QueryGrant) -> service_pb2.PollWorkflowTaskResponse:
    """The poll response that carries a query (or an update's validation) to a worker."""
    return service_pb2.PollWorkflowTaskResponse(
        task_token=grant.token(),
        workflow_execution=common_pb2.WorkflowExecution(
            workflow_id=grant.key.workflow_id, run_id=grant.key.run_id
        ),
        workflow_type=grant.workflow_type,
        query=service_pb2.QueryRequest(
            query_id=grant.query_id,
            query_name=grant.name,
            args=wire.payloads_to_proto(grant.args),
            validate_update=grant.validate_update,
        ),
        task_queue=grant.task_queue,
    )


def workflow_task(grant: grants.WorkflowTaskGrant) -> service_pb2.PollWorkflowTaskResponse:
    """The poll response (or ``workflow_task`` of a completion's response) for a grant."""
    key = grant.token.key
    return service_pb2.PollWorkflowTaskResponse(
        activities_rate_limited=grant.activities_rate_limited,
        task_token=grant.token.encode(),
        workflow_execution=common_pb2.WorkflowExecution(
            workflow_id=key.workflow_id, run_id=key.run_id
        ),
        workflow_type=grant.workflow_type,
        events=[read.event_to_proto(e) for e in grant.events],
        attempt=grant.attempt,
        task_queue=grant.task_queue,
    )


def activity_task(
    grant: activity_task_mod.ActivityTaskGrant,
) -> service_pb2.PollActivityTaskResponse:
    """The poll response (or an eager start in a completion's response) for a grant."""
    key, a = grant.token.key, grant.attributes
    response = service_pb2.PollActivityTaskResponse(
        task_token=grant.token.encode(),
        workflow_execution=common_pb2.WorkflowExecution(
            workflow_id=key.workflow_id, run_id=key.run_id
        ),
        workflow_type=grant.workflow_type,
        activity_id=a.activity_id,
        activity_type=a.activity_type,
        input=wire.payloads_to_proto(a.input),
        attempt=grant.attempt,
        scheduled_time=wire.timestamp_to_proto(grant.scheduled_time),
        started_time=wire.timestamp_to_proto(grant.started_time),
        heartbeat_details=wire.payloads_to_proto(grant.heartbeat_details),
        task_queue=a.task_queue,
        current_attempt_scheduled_time=wire.timestamp_to_proto(grant.attempt_scheduled_time),
    )
    if a.start_to_close_timeout is not None:
        response.start_to_close_timeout.CopyFrom(wire.duration_to_proto(a.start_to_close_timeout))
    if a.heartbeat_timeout is not None:
        response.heartbeat_timeout.CopyFrom(wire.duration_to_proto(a.heartbeat_timeout))
    return response
