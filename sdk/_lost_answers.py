"""Lost answers: a completion whose call failed without saying whether it applied.

A completion may commit on the server and its answer still never arrive (the call stream broke,
the server was killed between its commit and its reply, the call timed out). Only a definite
refusal (``NOT_FOUND`` or ``INVALID_ARGUMENT`` on the first attempt) says that nothing was
applied; after any other failure the worker must assume the completion may have committed.

When such a completion asked for eager tasks (the run's next workflow task,
``eager_workflow_task``; activities, ``max_eager_activities``), its commit may have started
them for this worker, which never saw them. So every such completion carries a request id,
and the worker then asks the server to release them (``ReleaseEagerWorkflowTask``, one call
for both), naming the completion by that id: the workflow task times out at once and the activity
attempts go back to their queue uncounted, instead of waiting for their timeouts
(docs/decisions.md §17). If the release fails too, those timeouts still end them.
"""

from __future__ import annotations

import uuid
from typing import Any

from chronicle.protos.v1 import common_pb2, service_pb2
from chronicle.sdk import _grpc

__all__ = ["definite_refusal", "new_request_id", "release_eager_tasks"]


def definite_refusal(error: BaseException) -> bool:
    """Whether ``error``, a failed completion, says for sure that nothing was applied.

    A refusal of a retried call may answer a duplicate of an attempt that did apply: not
    definite (``RPCError.retried``)."""
    refused = _grpc.NotFoundError | _grpc.InvalidArgumentError
    return isinstance(error, refused) and not error.retried


def new_request_id() -> str:
    """A fresh request id for one completion (the same on each of its retries)."""
    return uuid.uuid4().hex


async def release_eager_tasks(
    connection: _grpc.Connection,
    *,
    namespace: str,
    execution: common_pb2.WorkflowExecution,
    identity: str,
    request_id: str,
    log: Any,
) -> None:
    """Ask the server to release the workflow task and activity attempts that the completion
    ``request_id`` may have started eagerly for this worker on run ``execution``: the task
    times out now, the attempts go back to their queue uncounted. Never raises: on failure
    their own timeouts remain."""
    request = service_pb2.ReleaseEagerWorkflowTaskRequest(
        namespace=namespace,
        workflow_execution=common_pb2.WorkflowExecution(
            workflow_id=execution.workflow_id, run_id=execution.run_id
        ),
        identity=identity,
        request_id=request_id,
    )
    try:
        response = await connection.call("ReleaseEagerWorkflowTask", request)
    except Exception as exc:
        log.warning(
            "could not release the tasks a lost answer may have carried; "
            "they time out when their timeouts fall due",
            error=str(exc),
        )
        return
    if response.released or response.activities_released:
        log.info(
            "released the tasks that a lost answer carried; they run again at once",
            workflow_task=response.released,
            activities=response.activities_released,
        )
