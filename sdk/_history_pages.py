"""Reading a run's whole history from the server, page by page (``GetWorkflowHistory``)."""

from __future__ import annotations

import builtins

from chronicle.history import wire
from chronicle.history.events import Event
from chronicle.protos.v1 import service_pb2
from chronicle.sdk import _grpc

__all__ = ["fetch_history"]


async def fetch_history(
    connection: _grpc.Connection,
    namespace: str,
    workflow_id: str,
    run_id: str = "",
    *,
    first_execution_run_id: str = "",
) -> builtins.list[Event]:
    """The whole history of a run (the current run when ``run_id`` is empty), oldest first.

    ``first_execution_run_id``: only a run of the chain that run started (else the server
    answers NOT_FOUND); the first page names the run, later pages ask for that run."""
    events: builtins.list[Event] = []
    next_id = 1
    while True:
        request = service_pb2.GetWorkflowHistoryRequest(
            namespace=namespace,
            workflow_id=workflow_id,
            run_id=run_id,
            first_event_id=next_id,
            first_execution_run_id=first_execution_run_id,
        )
        response = await connection.call("GetWorkflowHistory", request, workflow_id=workflow_id)
        run_id = run_id or response.run_id
        page = wire.events_from_proto(response.events)
        events.extend(page)
        if not page or response.closed:
            return events
        next_id = page[-1].id + 1
