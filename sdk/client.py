"""``Client``: start workflows and talk to running ones (through a ``WorkflowHandle``,
``_handle.py``, re-exported here).

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

import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal, overload

from chronicle.history import wire
from chronicle.history.payloads import PayloadEncodingError, to_payload, to_payloads
from chronicle.history.values import RetryPolicy
from chronicle.protos.v1 import common_pb2, service_pb2
from chronicle.sdk import _grpc
from chronicle.sdk._definitions import workflow_definition
from chronicle.sdk._descriptions import (
    PendingActivity,
    PendingChild,
    WorkflowDescription,
    WorkflowExecution,
)
from chronicle.sdk._encoding import encode_args
from chronicle.sdk._handle import ResultT, WorkflowHandle
from chronicle.sdk._history_pages import fetch_history as fetch_history
from chronicle.sdk.errors import (
    ActivityNotFound,
    exception_to_failure,
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

IdConflictPolicy = Literal["fail", "use_existing", "terminate_existing"]
"""What ``start`` does when a run with the same id is running."""

IdReusePolicy = Literal["allow_duplicate", "allow_duplicate_failed_only", "reject_duplicate"]
"""Whether ``start`` may reuse the id of a closed run."""


def default_identity() -> str:
    """``host:pid``: names this process in the history (who started, signalled …)."""
    import os

    return f"{socket.gethostname()}:{os.getpid()}"


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
        keepalive_interval: float = _grpc.DEFAULT_KEEPALIVE_INTERVAL,
        keepalive_timeout: float = _grpc.DEFAULT_KEEPALIVE_TIMEOUT,
    ) -> Client:
        """Connect to the server at ``address`` (default ``$CHRONICLE_ADDRESS`` or 127.0.0.1:7070).

        Waits up to ``connect_timeout`` seconds for the connection unless ``lazy``
        (``ServerUnavailableError`` if it does not come up). Later calls retry for up to
        ``retry_timeout`` seconds while the server is unavailable.

        The connection is pinged every ``keepalive_interval`` seconds (30) and given up when a
        ping is unanswered for ``keepalive_timeout`` seconds (10): a server that froze or whose
        host vanished without closing the connection is noticed within their sum, and calls go
        to a new connection (a worker's too). A Chronicle server refuses pings more often than
        every 5 s (it closes the connection: ``too_many_pings``). ``ValueError`` unless both
        are positive numbers of seconds (not ``bool``) of at most about 24 days (gRPC's limit).
        """
        connection = _grpc.Connection(
            address or _grpc.default_address(),
            retry_timeout=retry_timeout,
            keepalive_interval=keepalive_interval,
            keepalive_timeout=keepalive_timeout,
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

        The handle follows the workflow's chain of runs: ``signal``, ``query``, ``update``,
        ``describe``, ``history``, ``cancel``, ``terminate`` and ``reset`` act on the chain's
        current run after a continue-as-new or retry too (and raise ``WorkflowNotFound`` once
        the chain has ended, even if the id names a newer workflow); ``result`` follows the
        chain from the returned run (``handle.run_id``). With ``use_existing`` the chain is the
        existing run's.
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
            self,
            id,
            run_id=response.run_id,
            result_type=result_type,
            started=response.started,
            first_execution_run_id=response.first_execution_run_id,
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
