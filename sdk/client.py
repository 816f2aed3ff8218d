"""``Client`` and ``WorkflowHandle``: start workflows and talk to running ones.

```python
client = await Client.connect("127.0.0.1:7070", namespace="default")
handle = await client.start(order, "o-1", 1299, id="order-o-1", task_queue="orders")
print(await handle.result())
```

Every call goes through one :class:`~chronicle.sdk._grpc.Connection`, which retries while the
server is unavailable and maps gRPC failures to the SDK's errors. Mutating calls carry a request id
generated once per call, so a call retried after a lost answer takes effect once.
"""

from __future__ import annotations

import builtins
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, overload

from chronicle.history import wire
from chronicle.history.events import Event
from chronicle.history.payloads import PayloadEncodingError, from_payload, to_payload, to_payloads
from chronicle.history.state import RunStatus
from chronicle.history.values import RetryPolicy
from chronicle.protos.v1 import common_pb2, service_pb2
from chronicle.sdk import _grpc
from chronicle.sdk._definitions import workflow_definition
from chronicle.sdk._descriptions import (
    PendingActivity,
    PendingChild,
    WorkflowDescription,
    WorkflowExecution,
    description_from_proto,
)
from chronicle.sdk._stack import STACK_QUERY
from chronicle.sdk.errors import (
    ActivityNotFound,
    ChronicleError,
    WorkflowCancelled,
    WorkflowFailed,
    WorkflowTerminated,
    WorkflowTimedOut,
    _RunError,
    exception_to_failure,
    failure_to_exception,
)

__all__ = [
    "Client",
    "IdConflictPolicy",
    "IdReusePolicy",
    "PendingActivity",
    "PendingChild",
    "WorkflowDescription",
    "WorkflowExecution",
    "WorkflowHandle",
]

ResultT = TypeVar("ResultT")

IdConflictPolicy = Literal["fail", "use_existing", "terminate_existing"]
"""What ``start`` does when a run with the same id is running."""

IdReusePolicy = Literal["allow_duplicate", "allow_duplicate_failed_only", "reject_duplicate"]
"""Whether ``start`` may reuse the id of a closed run."""

_RESULT_POLL = timedelta(seconds=20)
"""How long one GetWorkflowResult long poll waits on the server before asking again."""

_RPC_SLACK = 10.0
"""Seconds added to a long poll's server-side wait to make its client-side deadline."""

_UPDATE_VALIDATION = 30.0
"""Seconds an UpdateWorkflow call allows for the validation on a worker (the server's cap)."""


def default_identity() -> str:
    """``host:pid``: names this process in the history (who started, signalled …)."""
    import os

    return f"{socket.gethostname()}:{os.getpid()}"


def encode_args(args: Iterable[Any], what: str) -> list[common_pb2.Payload]:
    """Encode call arguments; ``PayloadEncodingError`` names the argument index and ``what``."""
    encoded: builtins.list[common_pb2.Payload] = []
    for index, arg in enumerate(args):
        try:
            encoded.append(wire.payload_to_proto(to_payload(arg)))
        except (PayloadEncodingError, TypeError, ValueError) as exc:
            raise PayloadEncodingError(
                f"cannot encode argument {index} of {what} ({type(arg).__name__}): {exc}"
            ) from exc
    return encoded


def _encode_map(values: Mapping[str, Any] | None, what: str) -> dict[str, common_pb2.Payload]:
    encoded: dict[str, common_pb2.Payload] = {}
    for key, value in (values or {}).items():
        try:
            encoded[key] = wire.payload_to_proto(to_payload(value))
        except (PayloadEncodingError, TypeError, ValueError) as exc:
            raise PayloadEncodingError(f"cannot encode {what}[{key!r}]: {exc}") from exc
    return encoded


def _seconds(value: timedelta | float) -> timedelta:
    return value if isinstance(value, timedelta) else timedelta(seconds=value)


async def fetch_history(
    connection: _grpc.Connection, namespace: str, workflow_id: str, run_id: str = ""
) -> builtins.list[Event]:
    """The whole history of a run (the current run when ``run_id`` is empty), oldest first."""
    events: builtins.list[Event] = []
    next_id = 1
    while True:
        request = service_pb2.GetWorkflowHistoryRequest(
            namespace=namespace, workflow_id=workflow_id, run_id=run_id, first_event_id=next_id
        )
        response = await connection.call("GetWorkflowHistory", request, workflow_id=workflow_id)
        run_id = run_id or response.run_id
        page = wire.events_from_proto(response.events)
        events.extend(page)
        if not page or response.closed:
            return events
        next_id = page[-1].id + 1


class WorkflowHandle(Generic[ResultT]):
    """A workflow id (and optionally one run of it) to wait on, signal, query or cancel.

    Made by :meth:`Client.start` (``run_id`` is the started run) or :meth:`Client.get_handle`.
    When ``run_id`` is None, calls address the current (latest) run of the id.
    """

    def __init__(
        self,
        client: Client,
        workflow_id: str,
        *,
        run_id: str | None = None,
        result_type: Any = Any,
        started: bool = True,
    ) -> None:
        self._client = client
        self._id = workflow_id
        self._run_id = run_id
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

    def __repr__(self) -> str:
        return f"WorkflowHandle(id={self._id!r}, run_id={self._run_id!r})"

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
            namespace=self._client.namespace, workflow_id=self._id, run_id=self._run_id or ""
        )
        return description_from_proto(await self._call("DescribeWorkflow", request))

    async def history(self) -> builtins.list[Event]:
        """The run's events so far, oldest first."""
        return await fetch_history(
            self._client.connection, self._client.namespace, self._id, self._run_id or ""
        )

    async def follow_history(
        self, *, first_event_id: int = 1, poll: timedelta = _RESULT_POLL
    ) -> AsyncIterator[Event]:
        """Yield the run's events from ``first_event_id`` as they are appended; ends after the
        event that closes the run.

        Follows one run: the handle's, or the run that is current when the first page arrives
        (a continue-as-new is not followed). Each wait is a ``GetWorkflowHistory`` long poll of
        at most ``poll``, woken by the server as soon as an event is appended.
        """
        run_id = self._run_id or ""
        next_id = max(first_event_id, 1)
        while True:
            request = service_pb2.GetWorkflowHistoryRequest(
                namespace=self._client.namespace,
                workflow_id=self._id,
                run_id=run_id,
                first_event_id=next_id,
                wait=wire.duration_to_proto(poll),
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
            run_id=self._run_id or "",
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
            run_id=self._run_id or "",
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
            run_id=self._run_id or "",
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
            run_id=self._run_id or "",
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
            run_id=self._run_id or "",
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
            run_id=self._run_id or "",
            reason=reason,
            identity=self._client.identity,
        )
        await self._call("TerminateWorkflow", request)


class Client:
    """A connection to a Chronicle server, bound to one namespace. Use :meth:`connect`."""

    def __init__(
        self,
        connection: _grpc.Connection,
        *,
        namespace: str = "default",
        identity: str | None = None,
    ) -> None:
        self.connection = connection
        self.namespace = namespace
        self.identity = identity or default_identity()

    @classmethod
    async def connect(
        cls,
        address: str | None = None,
        namespace: str = "default",
        identity: str | None = None,
        *,
        connect_timeout: float = 10.0,
        retry_timeout: float = 60.0,
        lazy: bool = False,
    ) -> Client:
        """Connect to the server at ``address`` (default ``$CHRONICLE_ADDRESS`` or 127.0.0.1:7070).

        Waits up to ``connect_timeout`` seconds for the connection unless ``lazy``
        (``ServerUnavailableError`` if it does not come up). Later calls retry for up to
        ``retry_timeout`` seconds while the server is unavailable.
        """
        connection = _grpc.Connection(
            address or _grpc.default_address(), retry_timeout=retry_timeout
        )
        if not lazy:
            try:
                await connection.wait_ready(connect_timeout)
            except BaseException:
                await connection.close()
                raise
        return cls(connection, namespace=namespace, identity=identity)

    @property
    def address(self) -> str:
        """The server address this client talks to."""
        return self.connection.address

    async def close(self) -> None:
        """Close the connection. Idempotent."""
        await self.connection.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @overload
    async def start(
        self,
        workflow: Callable[..., Awaitable[ResultT]],
        *args: Any,
        id: str,
        task_queue: str,
        id_conflict_policy: IdConflictPolicy = "fail",
        id_reuse_policy: IdReusePolicy = "allow_duplicate",
        execution_timeout: timedelta | float | None = None,
        run_timeout: timedelta | float | None = None,
        task_timeout: timedelta | float | None = None,
        retry: RetryPolicy | None = None,
        memo: Mapping[str, Any] | None = None,
        search_attributes: Mapping[str, Any] | None = None,
        start_delay: timedelta | float | None = None,
        start_signal: str | None = None,
        start_signal_args: Iterable[Any] = (),
        request_id: str | None = None,
    ) -> WorkflowHandle[ResultT]: ...

    @overload
    async def start(
        self,
        workflow: str,
        *args: Any,
        id: str,
        task_queue: str,
        id_conflict_policy: IdConflictPolicy = "fail",
        id_reuse_policy: IdReusePolicy = "allow_duplicate",
        execution_timeout: timedelta | float | None = None,
        run_timeout: timedelta | float | None = None,
        task_timeout: timedelta | float | None = None,
        retry: RetryPolicy | None = None,
        memo: Mapping[str, Any] | None = None,
        search_attributes: Mapping[str, Any] | None = None,
        start_delay: timedelta | float | None = None,
        start_signal: str | None = None,
        start_signal_args: Iterable[Any] = (),
        request_id: str | None = None,
    ) -> WorkflowHandle[Any]: ...

    async def start(
        self,
        workflow: Callable[..., Awaitable[Any]] | str,
        *args: Any,
        id: str,
        task_queue: str,
        id_conflict_policy: IdConflictPolicy = "fail",
        id_reuse_policy: IdReusePolicy = "allow_duplicate",
        execution_timeout: timedelta | float | None = None,
        run_timeout: timedelta | float | None = None,
        task_timeout: timedelta | float | None = None,
        retry: RetryPolicy | None = None,
        memo: Mapping[str, Any] | None = None,
        search_attributes: Mapping[str, Any] | None = None,
        start_delay: timedelta | float | None = None,
        start_signal: str | None = None,
        start_signal_args: Iterable[Any] = (),
        request_id: str | None = None,
    ) -> WorkflowHandle[Any]:
        """Start a workflow run and return its handle.

        ``workflow`` is a ``@workflow`` function or a workflow type name. Raises
        ``WorkflowAlreadyStarted`` when ``id`` is in use (unless ``id_conflict_policy`` says
        otherwise) and ``PayloadEncodingError`` naming the argument when one cannot be encoded
        (nothing is sent then). ``start_signal`` makes it signal-with-start.
        """
        if isinstance(workflow, str):
            name, result_type = workflow, Any
        else:
            try:
                definition = workflow_definition(workflow)
            except TypeError:
                raise TypeError(
                    "client.start() takes a @workflow function or a workflow type name, got "
                    f"{workflow!r}"
                ) from None
            name, result_type = definition.name, definition.return_hint
        request = service_pb2.StartWorkflowRequest(
            namespace=self.namespace,
            workflow_id=id,
            workflow_type=name,
            task_queue=task_queue,
            input=encode_args(args, f"workflow {name!r}"),
            request_id=request_id or str(uuid.uuid4()),
            id_conflict_policy=id_conflict_policy,
            id_reuse_policy=id_reuse_policy,
            memo=_encode_map(memo, "memo"),
            search_attributes=_encode_map(search_attributes, "search_attributes"),
            identity=self.identity,
        )
        for field, value in (
            ("execution_timeout", execution_timeout),
            ("run_timeout", run_timeout),
            ("workflow_task_timeout", task_timeout),
            ("start_delay", start_delay),
        ):
            if value is not None:
                getattr(request, field).CopyFrom(wire.duration_to_proto(_seconds(value)))
        if retry is not None:
            request.retry_policy.CopyFrom(wire.retry_policy_to_proto(retry))
        if start_signal is not None:
            request.signal_name = start_signal
            request.signal_input.extend(
                encode_args(start_signal_args, f"signal {start_signal!r} of workflow {name!r}")
            )
        response = await self.connection.call("StartWorkflow", request)
        return WorkflowHandle(
            self, id, run_id=response.run_id, result_type=result_type, started=response.started
        )

    async def signal_with_start(
        self,
        workflow: Callable[..., Awaitable[Any]] | str,
        *args: Any,
        signal: str,
        signal_args: Iterable[Any] = (),
        id: str,
        task_queue: str,
        id_conflict_policy: IdConflictPolicy = "use_existing",
        **options: Any,
    ) -> WorkflowHandle[Any]:
        """Signal the running workflow ``id``, or start it with the signal as its first event.

        Shorthand for ``start(..., start_signal=signal, start_signal_args=signal_args)`` whose
        default conflict policy is ``"use_existing"`` (signal the run that is already running);
        ``options`` are ``start``'s other keyword options.
        """
        if not signal:
            raise ValueError("signal_with_start needs a signal name")
        handle: WorkflowHandle[Any] = await self.start(
            workflow,
            *args,
            id=id,
            task_queue=task_queue,
            id_conflict_policy=id_conflict_policy,
            start_signal=signal,
            start_signal_args=signal_args,
            **options,
        )
        return handle

    def get_handle(
        self, workflow_id: str, run_id: str | None = None, *, result_type: Any = Any
    ) -> WorkflowHandle[Any]:
        """A handle on an existing workflow (its current run unless ``run_id`` is given)."""
        return WorkflowHandle(self, workflow_id, run_id=run_id, result_type=result_type)

    async def list(
        self,
        query: str = "",
        *,
        page_size: int = 100,
    ) -> AsyncIterator[WorkflowExecution]:
        """The runs matching ``query`` (e.g. ``"status = 'running' AND type = 'order'"``).

        Pages are fetched as iteration reaches them.
        """
        token = b""
        while True:
            request = service_pb2.ListWorkflowsRequest(
                namespace=self.namespace,
                query=query,
                page_size=page_size,
                next_page_token=token,
            )
            response = await self.connection.call("ListWorkflows", request)
            for info in response.executions:
                yield WorkflowExecution._from_proto(info)
            token = response.next_page_token
            if not token:
                return

    async def complete_activity(self, task_token: bytes, result: Any = None) -> None:
        """Complete an activity that called ``activity.raise_complete_async()``.

        Raises ``ActivityNotFound`` when the token names no pending attempt (already completed,
        timed out, retried, cancelled) and ``ValueError`` when it is not a task token.
        """
        request = service_pb2.CompleteActivityTaskRequest(
            namespace=self.namespace,
            task_token=task_token,
            identity=self.identity,
            result=wire.payload_to_proto(to_payload(result)),
        )
        await self._by_token("CompleteActivityTask", request)

    async def fail_activity(self, task_token: bytes, error: BaseException) -> None:
        """Fail an attempt of an activity that called ``activity.raise_complete_async()``.

        The failure is retried per the activity's retry policy like any other (raise an
        ``ApplicationError(non_retryable=True)`` to fail it for good). Errors as
        ``complete_activity``.
        """
        request = service_pb2.FailActivityTaskRequest(
            namespace=self.namespace,
            task_token=task_token,
            identity=self.identity,
            failure=wire.failure_to_proto(exception_to_failure(error)),
        )
        await self._by_token("FailActivityTask", request)

    async def heartbeat_activity(self, task_token: bytes, *details: Any) -> bool:
        """Heartbeat an asynchronously completed activity; returns True once the workflow asked
        it to cancel (then report ``fail_activity(token, asyncio.CancelledError())``).

        ``details`` reach the next attempt as ``activity.info().heartbeat_details``. Errors as
        ``complete_activity``.
        """
        request = service_pb2.HeartbeatActivityTaskRequest(
            namespace=self.namespace,
            task_token=task_token,
            identity=self.identity,
            details=wire.payloads_to_proto(to_payloads(details)),
        )
        response = await self._by_token("HeartbeatActivityTask", request)
        return bool(response.cancel_requested)

    async def _by_token(self, method: str, request: Any) -> Any:
        try:
            return await self.connection.call(method, request)
        except _grpc.NotFoundError as exc:
            raise ActivityNotFound(str(exc)) from None
