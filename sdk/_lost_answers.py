"""Lost answers: a completion whose call failed without saying whether it applied.

A completion may commit on the server and its answer still never arrive (the call stream broke,
the server was killed between its commit and its reply, the call timed out). Only a definite
refusal (``NOT_FOUND`` or ``INVALID_ARGUMENT`` on the first attempt) says that nothing was
applied; after any other failure the worker must assume the completion may have committed.

When such a completion asked for the run's next workflow task (``eager_workflow_task``), its
commit may have started that task for this worker, which never saw it. The worker then asks
the server to release it (``ReleaseEagerWorkflowTask``), naming the completion by its request
id: the task times out at once instead of when its workflow-task timeout falls due
(docs/decisions.md §17). If the release fails too, that timeout still ends the task.
"""

from __future__ import annotations

import uuid
from typing import Any

from chronicle.protos.v1 import common_pb2, service_pb2
from chronicle.sdk import _grpc

__all__ = ["definite_refusal", "new_request_id", "release_eager_workflow_task"]


def definite_refusal(error: BaseException) -> bool:
    """Whether ``error``, a failed completion, says for sure that nothing was applied.

    A refusal of a retried call may answer a duplicate of an attempt that did apply: not
    definite (``RPCError.retried``)."""
    refused = _grpc.NotFoundError | _grpc.InvalidArgumentError
    return isinstance(error, refused) and not error.retried


def new_request_id() -> str:
    """A fresh request id for one completion (the same on each of its retries)."""
    return uuid.uuid4().hex


async def release_eager_workflow_task(
    connection: _grpc.Connection,
    *,
    namespace: str,
    execution: common_pb2.WorkflowExecution,
    identity: str,
    request_id: str,
    log: Any,
) -> None:
    """Ask the server to time out the workflow task that the completion ``request_id`` may
    have started for this worker on run ``execution``. Never raises: on failure the task's
    own timeout remains."""
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
            "could not release the workflow task a lost answer may have carried; "
            "it times out when its workflow-task timeout falls due",
            error=str(exc),
        )
        return
    if response.released:
        log.info("released the workflow task that a lost answer carried; it is retried at once")
