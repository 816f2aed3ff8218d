"""``WorkflowHandle``: one workflow id (or one run of it) to wait on, signal, query, update,
describe, reset, cancel or terminate; made by ``Client.start`` and ``Client.get_handle``.

A handle from ``Client.start`` follows its workflow's chain of runs (continue-as-new, retries,
resets): its calls other than ``result`` name no run but the chain's first run
(``first_execution_run_id``), so the server acts on the chain's current run, and answers
NOT_FOUND once the chain has ended, never touching a later workflow of the same id
(docs/decisions.md §22).

Long polls (``result``, ``follow_history``, ``update``) ask the server to wait up to
``_RESULT_POLL`` and ask again until the answer is there.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from chronicle.history import wire
from chronicle.history.events import Event
from chronicle.history.payloads import from_payload
from chronicle.history.state import RunStatus
from chronicle.protos.v1 import service_pb2
from chronicle.sdk._descriptions import WorkflowDescription, description_from_proto
from chronicle.sdk._encoding import encode_args
from chronicle.sdk._history_pages import fetch_history
from chronicle.sdk._stack import STACK_QUERY
from chronicle.sdk.errors import (
    ChronicleError,
    WorkflowCancelled,
    WorkflowFailed,
    WorkflowTerminated,
    WorkflowTimedOut,
    _RunError,
    failure_to_exception,
)

if TYPE_CHECKING:
    from chronicle.sdk.client import Client

__all__ = ["ResultT", "WorkflowHandle"]

ResultT = TypeVar("ResultT")
"""The result type of a workflow (its handle's ``result()``)."""

_RESULT_POLL = timedelta(seconds=20)
"""How long one GetWorkflowResult long poll waits on the server before asking again."""

_RPC_SLACK = 10.0
"""Seconds added to a long poll's server-side wait to make its client-side deadline."""

_UPDATE_VALIDATION = 30.0
"""Seconds an UpdateWorkflow call allows for the validation on a worker (the server's cap)."""


class WorkflowHandle(Generic[ResultT]):
    """A workflow id (and optionally one run of it) to wait on, signal, query or cancel.

    Made by :meth:`Client.start` (``run_id`` is the started run) or :meth:`Client.get_handle`.
    When ``run_id`` is None, calls address the current (latest) run of the id. With
    ``first_execution_run_id`` (a handle from ``start``), calls other than ``result`` address
    the current run of the chain that run started, wherever it has got to; ``result``
    follows the chain from ``run_id``.
    """

    def __init__(
        self,
        client: Client,
        workflow_id: str,
        *,
        run_id: str | None = None,
        result_type: Any = Any,
        started: bool = True,
        first_execution_run_id: str | None = None,
    ) -> None:
        self._client = client
        self._id = workflow_id
        self._run_id = run_id
        self._first_execution_run_id = first_execution_run_id or ""
        self._result_type = result_type
        self.started = started
        """False when ``start`` returned an existing run (``id_conflict_policy="use_existing"``)."""

    @property
    def id(self) -> str:
        """The workflow id."""
        return self._id

    @property
    def run_id(self) -> str | None:
        """The run this handle follows, or None for "the current run"."""
        return self._run_id

    @property
    def first_execution_run_id(self) -> str | None:
        """The first run of the chain this handle follows (a handle from ``start``), or None."""
        return self._first_execution_run_id or None

    def __repr__(self) -> str:
        return f"WorkflowHandle(id={self._id!r}, run_id={self._run_id!r})"

    @property
    def _target_run(self) -> str:
        """The ``run_id`` of requests other than ``result``'s: none when the handle follows a
        chain (the server then picks the chain's current run), else the handle's run."""
        return "" if self._first_execution_run_id else self._run_id or ""

    async def _call(self, method: str, request: Any, *, timeout: float | None = 30.0) -> Any:
        return await self._client.connection.call(
            method, request, timeout=timeout, workflow_id=self._id
        )

    async def result(self, *, follow_runs: bool = True) -> ResultT:
        """Wait for the workflow to close and return its result.

        Follows continue-as-new and retries to the last run when ``follow_runs``. Raises
        ``WorkflowFailed`` (``.cause`` is the workflow's exception), ``WorkflowCancelled``,
        ``WorkflowTerminated`` or ``WorkflowTimedOut``. Wrap in ``asyncio.timeout`` to bound it.
        """
        run_id = self._run_id or ""
        while True:
            request = service_pb2.GetWorkflowResultRequest(
                namespace=self._client.namespace,
                workflow_id=self._id,
                run_id=run_id,
                follow_runs=follow_runs,
                wait=wire.duration_to_proto(_RESULT_POLL),
            )
            response = await self._call(
                "GetWorkflowResult",
                request,
                timeout=_RESULT_POLL.total_seconds() + _RPC_SLACK,
            )
            if response.closed:
                return self._outcome(response)

    def _outcome(self, response: service_pb2.GetWorkflowResultResponse) -> ResultT:
        status = response.status
        where = f"workflow {self._id!r} (run {response.run_id})"
        if status == RunStatus.COMPLETED:
            if not response.HasField("result"):
                return None  # type: ignore[return-value]
            value: ResultT = from_payload(
                wire.payload_from_proto(response.result), self._result_type
            )
            return value
        failure = (
            wire.failure_from_proto(response.failure) if response.HasField("failure") else None
        )
        message = failure.message if failure else ""
        cause = failure_to_exception(failure) if failure else None
        errors: dict[str, tuple[type[_RunError], str]] = {
            RunStatus.FAILED: (WorkflowFailed, f"{where} failed: {message}"),
            RunStatus.CANCELED: (WorkflowCancelled, f"{where} was cancelled"),
            RunStatus.TERMINATED: (
                WorkflowTerminated,
                f"{where} was terminated" + (f": {message}" if message else ""),
            ),
            RunStatus.TIMED_OUT: (WorkflowTimedOut, f"{where} timed out"),
        }
        if status in errors:
            error_type, text = errors[status]
            raise error_type(text, cause=cause, workflow_id=self._id, run_id=response.run_id)
        if status == RunStatus.CONTINUED_AS_NEW:
            raise ChronicleError(f"{where} continued as new as run {response.next_run_id}")
        raise ChronicleError(f"{where} closed with unknown status {status!r}")

    async def describe(self) -> WorkflowDescription:
        """The run's status, type, task queue, times, history length and what it waits for."""
        request = service_pb2.DescribeWorkflowRequest(
            namespace=self._client.namespace,
            workflow_id=self._id,
            run_id=self._target_run,
            first_execution_run_id=self._first_execution_run_id,
        )
        return description_from_proto(await self._call("DescribeWorkflow", request))

    async def history(self) -> builtins.list[Event]:
        """The run's events so far, oldest first (of the chain's current run when the handle
        follows a chain, as ``describe``)."""
        return await fetch_history(
            self._client.connection,
            self._client.namespace,
            self._id,
            self._target_run,
            first_execution_run_id=self._first_execution_run_id,
        )

    async def follow_history(
        self, *, first_event_id: int = 1, poll: timedelta = _RESULT_POLL
    ) -> AsyncIterator[Event]:
        """Yield the run's events from ``first_event_id`` as they are appended; ends after the
        event that closes the run.

        Follows one run: the handle's, or the run that is current when the first page arrives
        (of the handle's chain when it follows one; a continue-as-new is not followed). Each
        wait is a ``GetWorkflowHistory`` long poll of at most ``poll``, woken by the server as
        soon as an event is appended.
        """
        run_id = self._target_run
        next_id = max(first_event_id, 1)
        while True:
            request = service_pb2.GetWorkflowHistoryRequest(
                namespace=self._client.namespace,
                workflow_id=self._id,
                run_id=run_id,
                first_event_id=next_id,
                wait=wire.duration_to_proto(poll),
                first_execution_run_id=self._first_execution_run_id,
            )
            response = await self._call(
                "GetWorkflowHistory", request, timeout=poll.total_seconds() + _RPC_SLACK
            )
            run_id = run_id or response.run_id
            for event in wire.events_from_proto(response.events):
                next_id = event.id + 1
                yield event
            if response.closed:
                return

    async def signal(self, name: str, *args: Any, request_id: str | None = None) -> None:
        """Send signal ``name`` with ``args``; recorded once even if the call is retried."""
        request = service_pb2.SignalWorkflowRequest(
            namespace=self._client.namespace,
            workflow_id=self._id,
            run_id=self._target_run,
            first_execution_run_id=self._first_execution_run_id,
            signal_name=name,
            input=encode_args(args, f"signal {name!r} of {self._id!r}"),
            request_id=request_id or str(uuid.uuid4()),
            identity=self._client.identity,
        )
        await self._call("SignalWorkflow", request)

    async def query(self, name: str, *args: Any, result_type: Any = Any) -> Any:
        """Ask the workflow's query handler ``name``; read-only, answered by a worker (on a
        closed run too, by replay). The handler's error, or an unknown name (the message lists
        the registered ones), raises as the ``FailureError`` it describes (``ApplicationError``);
        no worker polling the run's task queue: ``RPCError`` (``FAILED_PRECONDITION``)."""
        request = service_pb2.QueryWorkflowRequest(
            namespace=self._client.namespace,
            workflow_id=self._id,
            run_id=self._target_run,
            first_execution_run_id=self._first_execution_run_id,
            query_name=name,
            args=encode_args(args, f"query {name!r} of {self._id!r}"),
        )
        response = await self._call("QueryWorkflow", request, timeout=60.0)
        if response.HasField("failure"):
            raise failure_to_exception(wire.failure_from_proto(response.failure))
        if not response.HasField("result"):
            return None
        return from_payload(wire.payload_from_proto(response.result), result_type)

    async def update(
        self, name: str, *args: Any, update_id: str | None = None, result_type: Any = Any
    ) -> Any:
        """Run the workflow's update handler ``name`` and return its result.

        Raises the ``FailureError`` (``ApplicationError`` …) of a rejection (unknown name, wrong
        arguments, the validator raised: nothing is recorded) or of the handler. Waits as long
        as the handler runs, asking again when a long poll ends; idempotent by ``update_id``
        (generated when omitted), so calling again with the same id after a lost connection
        returns the same outcome and never runs the handler twice.
        """
        request = service_pb2.UpdateWorkflowRequest(
            namespace=self._client.namespace,
            workflow_id=self._id,
            run_id=self._target_run,
            first_execution_run_id=self._first_execution_run_id,
            update_name=name,
            args=encode_args(args, f"update {name!r} of {self._id!r}"),
            update_id=update_id or str(uuid.uuid4()),
            identity=self._client.identity,
            wait=wire.duration_to_proto(_RESULT_POLL),
        )
        timeout = _RESULT_POLL.total_seconds() + _UPDATE_VALIDATION + _RPC_SLACK
        while True:
            response = await self._call("UpdateWorkflow", request, timeout=timeout)
            if response.completed:
                break
            request.run_id = response.run_id  # asking again: the same run, even after a CAN
        if response.HasField("failure"):
            raise failure_to_exception(wire.failure_from_proto(response.failure))
        if not response.HasField("result"):
            return None
        return from_payload(wire.payload_from_proto(response.result), result_type)

    async def cancel(self, reason: str = "") -> None:
        """Ask the workflow to cancel; it sees ``asyncio.CancelledError`` and may clean up."""
        request = service_pb2.RequestCancelWorkflowRequest(
            namespace=self._client.namespace,
            workflow_id=self._id,
            run_id=self._target_run,
            first_execution_run_id=self._first_execution_run_id,
            reason=reason,
            request_id=str(uuid.uuid4()),
            identity=self._client.identity,
        )
        await self._call("RequestCancelWorkflow", request)

    async def stack(self) -> str:
        """Where the running workflow waits: every coroutine and the file:line it awaits at.

        A built-in query answered by a worker from the live instance (or a replay of its
        history), so a worker serving the workflow's task queue must be running.
        """
        text: str = await self.query(STACK_QUERY)
        return text

    async def reset(
        self,
        event_id: int | None = None,
        *,
        to_last_good: bool = False,
        reapply_signals: bool = False,
        reason: str = "",
    ) -> WorkflowHandle[ResultT]:
        """Rerun the workflow from a workflow-task boundary; returns a handle on the new run.

        ``event_id`` is a ``WorkflowTaskCompleted`` event id of the run (``to_last_good``: the
        last one before the first failure). The run is terminated if still open and keeps its
        history; the new run's history is the old one up to that event and its task's commands,
        and today's code carries it on. ``reapply_signals`` re-sends the signals received
        after that point. ``InvalidArgumentError`` names a bad reset point.
        """
        request = service_pb2.ResetWorkflowRequest(
            namespace=self._client.namespace,
            workflow_id=self._id,
            run_id=self._target_run,
            first_execution_run_id=self._first_execution_run_id,
            event_id=event_id or 0,
            to_last_good=to_last_good,
            reapply_signals=reapply_signals,
            reason=reason,
            identity=self._client.identity,
        )
        response = await self._call("ResetWorkflow", request)
        return WorkflowHandle(
            self._client, self._id, run_id=response.run_id, result_type=self._result_type
        )

    async def terminate(self, reason: str = "") -> None:
        """Close the run at once, without running any more workflow code."""
        request = service_pb2.TerminateWorkflowRequest(
            namespace=self._client.namespace,
            workflow_id=self._id,
            run_id=self._target_run,
            first_execution_run_id=self._first_execution_run_id,
            reason=reason,
            identity=self._client.identity,
        )
        await self._call("TerminateWorkflow", request)
