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

A poll's answer can be lost the same way (its call failed after the server started a task for
it). Each attempt of a poll carries a fresh request id; after a failure that is not a definite
refusal the worker names it in a release (``LostPolls``, the same RPC, with
``poll_request_ids``): the task or attempt it started goes back at once, and a poll still
running on a server that has not seen the break is ended (docs/decisions.md §8).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from typing import Any, Final

from chronicle.protos.v1 import common_pb2, service_pb2
from chronicle.sdk import _grpc

__all__ = ["LostPolls", "definite_refusal", "new_request_id", "release_eager_tasks"]


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


MAX_LOST_POLLS: Final = 500
"""The most poll request ids a worker keeps to release (a long outage fails a poll attempt
every few seconds; the oldest are dropped, their tasks left to their timeouts)."""

GATHER_DELAY: Final = 0.05
"""Seconds a release waits for other polls failing at the same time (one broken connection
fails every poll on it), so that one call names them all: a poll released later could take a
task the first release retried."""


class LostPolls:
    """Polls of one worker that failed without an answer, released in the background
    (``ReleaseEagerWorkflowTask`` with ``poll_request_ids``) on the next connection that
    works (the call retries ``UNAVAILABLE`` as every call does)."""

    def __init__(
        self, connection: _grpc.Connection, *, namespace: str, identity: str, log: Any
    ) -> None:
        self._connection = connection
        self._namespace = namespace
        self._identity = identity
        self._log = log
        self._pending: dict[str, None] = {}  # insertion-ordered set
        self._releasing: asyncio.Task[None] | None = None

    def lost(self, request_ids: Iterable[str]) -> None:
        """The poll attempts ``request_ids`` failed without an answer: release them soon."""
        for request_id in request_ids:
            self._pending[request_id] = None
        while len(self._pending) > MAX_LOST_POLLS:
            del self._pending[next(iter(self._pending))]
        if self._pending and (self._releasing is None or self._releasing.done()):
            self._releasing = asyncio.create_task(self._release(), name="release lost polls")

    @property
    def pending(self) -> list[str]:
        """The request ids not released yet."""
        return list(self._pending)

    async def _release(self) -> None:
        await asyncio.sleep(GATHER_DELAY)
        while self._pending and not self._connection.closed:
            ids = list(self._pending)
            for request_id in ids:
                del self._pending[request_id]
            request = service_pb2.ReleaseEagerWorkflowTaskRequest(
                namespace=self._namespace, identity=self._identity, poll_request_ids=ids
            )
            try:
                response = await self._connection.call("ReleaseEagerWorkflowTask", request)
            except Exception as exc:
                self._log.warning(
                    "could not release the tasks lost poll answers may have carried; "
                    "they time out when their timeouts fall due",
                    polls=len(ids),
                    error=str(exc),
                )
                continue
            if response.workflow_tasks_released or response.activities_released:
                self._log.info(
                    "released the tasks that lost poll answers carried; they run again at once",
                    workflow_tasks=response.workflow_tasks_released,
                    activities=response.activities_released,
                )

    def close(self) -> None:
        """Stop releasing (the worker has stopped: its session's end times its tasks out)."""
        task, self._releasing = self._releasing, None
        if task is not None:
            task.cancel()
