"""The SDK's one gRPC connection: a ``grpc.aio`` channel, retries with back-off, error mapping.

Every unary call goes through :meth:`Connection.call`. A call that fails with ``UNAVAILABLE``
(the server is restarting, or was killed and is coming back) is retried with exponential
back-off and jitter (100 ms doubling to a 5 s cap) until ``retry_timeout`` has passed since the
first attempt; then :class:`ServerUnavailableError` is raised. Retrying is safe because every
mutating RPC is idempotent on the server: starts, signals and cancellations carry a request id
generated once per call and reused across attempts, and task completions are checked against the
history (a duplicate is answered ``NOT_FOUND``, which callers treat as "stale").

Other status codes are mapped once, here (STYLE.md habit 7), by :func:`map_rpc_error`:

=====================  ==================================================================
``NOT_FOUND``          :class:`~chronicle.sdk.errors.WorkflowNotFound` when the call is
                       about a workflow, else :class:`NotFoundError`
``ALREADY_EXISTS``     :class:`~chronicle.sdk.errors.WorkflowAlreadyStarted`
``INVALID_ARGUMENT``   :class:`InvalidArgumentError` (a ``ValueError``) with the server's
                       message, which names the offending field
``UNIMPLEMENTED``      :class:`UnimplementedError`
``UNAVAILABLE``        :class:`ServerUnavailableError` (after the retries ran out)
anything else          :class:`RPCError`
=====================  ==================================================================
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import grpc.aio
import structlog

from chronicle.protos.v1 import service_pb2_grpc
from chronicle.sdk._call_stream import MAX_MESSAGE_BYTES, CallStream
from chronicle.sdk.errors import ChronicleError, WorkflowAlreadyStarted, WorkflowNotFound

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_KEEPALIVE_INTERVAL",
    "DEFAULT_KEEPALIVE_TIMEOUT",
    "Connection",
    "InvalidArgumentError",
    "NotFoundError",
    "RPCError",
    "ServerUnavailableError",
    "UnimplementedError",
    "channel_options",
    "default_address",
    "map_rpc_error",
]

_log = structlog.get_logger("chronicle.sdk.grpc")

DEFAULT_ADDRESS = "127.0.0.1:7070"
"""Where clients, workers and the CLI look for the server unless told otherwise."""

_INITIAL_BACKOFF = 0.1
_MAX_BACKOFF = 5.0

DEFAULT_KEEPALIVE_INTERVAL = 30.0
"""Seconds between the SDK's HTTP/2 pings on its connection (``Client.connect``)."""

DEFAULT_KEEPALIVE_TIMEOUT = 10.0
"""Seconds the SDK waits for a ping's answer before it gives the connection up."""

_BASE_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # Reconnect quickly after a server restart instead of gRPC's default 1 s → 120 s back-off.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


_MAX_OPTION_MS = 2**31 - 1
"""gRPC takes channel options as C ints: the longest keepalive value, in milliseconds."""


def _milliseconds(name: str, seconds: float) -> int:
    # bool is an int to Python: True would mean a ping every second, not a mistake caught.
    number = isinstance(seconds, int | float) and not isinstance(seconds, bool)
    if not (number and math.isfinite(seconds) and seconds > 0):
        raise ValueError(
            f"Client.connect({name}=...) must be a positive number of seconds, got {seconds!r}"
        )
    milliseconds = max(1, round(seconds * 1000))
    if milliseconds > _MAX_OPTION_MS:
        raise ValueError(
            f"Client.connect({name}=...) must be a positive number of seconds, at most "
            f"{_MAX_OPTION_MS // 1000} (gRPC's limit, about 24 days), got {seconds!r}"
        )
    return milliseconds


def channel_options(
    keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL,
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
) -> list[tuple[str, Any]]:
    """The options of the SDK's channel; ``ValueError`` unless both keepalive values are
    positive finite seconds (a number, not a ``bool``), at most about 24 days (gRPC's limit).

    The SDK pings the server every ``keepalive_interval`` seconds, even on a connection without
    calls, and gives up on it after ``keepalive_timeout`` seconds without an answer: a server
    host that vanished without closing the connection (or a frozen server process) is noticed,
    calls in flight fail ``UNAVAILABLE`` and are retried on a new connection, and proxies see no
    idle stream. A Chronicle server accepts a ping every 5 s and less often (server/app.py); a
    shorter interval earns ping strikes, and it closes the connection (GOAWAY
    ``too_many_pings``).
    """
    timeout_ms = _milliseconds("keepalive_timeout", keepalive_timeout)
    return [
        *_BASE_CHANNEL_OPTIONS,
        ("grpc.keepalive_time_ms", _milliseconds("keepalive_interval", keepalive_interval)),
        ("grpc.keepalive_timeout_ms", timeout_ms),
        # What closes the connection (gRPC 1.85): a ping unanswered this long.
        ("grpc.http2.ping_timeout_ms", timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


ResponseT = TypeVar("ResponseT")


def default_address() -> str:
    """``$CHRONICLE_ADDRESS`` if set, else ``127.0.0.1:7070``."""
    return os.environ.get("CHRONICLE_ADDRESS") or DEFAULT_ADDRESS


class RPCError(ChronicleError):
    """A call to the server failed; ``code`` is the gRPC status code name (``"INTERNAL"`` …).

    ``retried``: an earlier attempt of the call failed with ``UNAVAILABLE`` and may have
    reached the server, so this answer may be to a duplicate (a ``NOT_FOUND`` for a task the
    first attempt completed, say): what the call asked for may have happened.
    """

    def __init__(self, message: str, *, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code
        self.retried = False


class ServerUnavailableError(RPCError):
    """The server could not be reached (after retrying for the connection's retry timeout)."""


class InvalidArgumentError(RPCError, ValueError):
    """The server rejected a request as malformed; the message names the offending field."""


class NotFoundError(RPCError):
    """The server does not know the thing asked about (e.g. a stale task token)."""


class UnimplementedError(RPCError):
    """The server does not implement this call (yet)."""


def _details(error: grpc.aio.AioRpcError) -> str:
    text = error.details()
    return str(text) if text else str(error.code().name.lower())


def map_rpc_error(
    error: grpc.aio.AioRpcError,
    *,
    address: str = "",
    method: str = "",
    workflow_id: str | None = None,
) -> Exception:
    """The SDK exception for a failed call (see the module docstring for the table).

    ``workflow_id`` says the call was about that workflow, so ``NOT_FOUND`` means it does not
    exist (``WorkflowNotFound``) rather than, say, a stale task token.
    """
    code = error.code()
    detail = _details(error)
    if code == grpc.StatusCode.NOT_FOUND:
        if workflow_id is not None:
            return WorkflowNotFound(detail or f"workflow {workflow_id!r} not found")
        return NotFoundError(detail, code=code.name)
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return WorkflowAlreadyStarted(detail)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgumentError(detail, code=code.name)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        what = method or "this call"
        return UnimplementedError(
            f"the Chronicle server at {address} does not support {what} yet ({detail})",
            code=code.name,
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        return ServerUnavailableError(
            f"cannot reach the Chronicle server at {address}: {detail}", code=code.name
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RPCError(f"{method or 'call'} to {address} timed out: {detail}", code=code.name)
    return RPCError(f"{method or 'call'} failed ({code.name}): {detail}", code=code.name)


def _backoff(attempt: int) -> float:
    """Delay before retry ``attempt`` (1-based): 100 ms doubling to 5 s, with ±20 % jitter."""
    delay = min(_MAX_BACKOFF, _INITIAL_BACKOFF * (2.0 ** (attempt - 1)))
    jitter: float = random.uniform(0.8, 1.2)
    return delay * jitter


class Connection:
    """A channel to the server and the ``WorkflowService`` stub, with retrying calls.

    Cheap to share: the client and every poller of a worker use one connection. Not bound to a
    namespace; requests carry theirs.
    """

    def __init__(
        self,
        address: str,
        *,
        retry_timeout: float = 60.0,
        call_stream: bool | None = None,
        keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
    ) -> None:
        """Open a channel to ``address`` (lazily: nothing connects until the first call);
        ``keepalive_interval`` and ``keepalive_timeout`` as in :func:`channel_options`."""
        options = channel_options(keepalive_interval, keepalive_timeout)
        self.address = address
        self.retry_timeout = retry_timeout
        self._channel: grpc.aio.Channel = grpc.aio.insecure_channel(address, options=options)
        self._stub: Any = service_pb2_grpc.WorkflowServiceStub(  # type: ignore[no-untyped-call]
            self._channel
        )  # generated code is untyped
        if call_stream is None:
            call_stream = os.environ.get("CHRONICLE_CALL_STREAM", "1") != "0"
        self._stream = CallStream(self._stub.CallStream) if call_stream else None
        self._closed = False

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the channel is connected; ``ServerUnavailableError`` after ``timeout`` s."""
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except TimeoutError:
            raise ServerUnavailableError(
                f"cannot reach the Chronicle server at {self.address}: "
                f"no connection after {timeout:g} s",
                code="UNAVAILABLE",
            ) from None

    async def call(
        self,
        method: str,
        request: Any,
        *,
        timeout: float | None = 30.0,
        retry_timeout: float | None = None,
        workflow_id: str | None = None,
        before_retry: Callable[[], None] | None = None,
    ) -> Any:
        """Call ``method`` (a ``WorkflowService`` RPC name) and return its response message.

        ``timeout`` is the deadline of each attempt; ``retry_timeout`` (default: the
        connection's) bounds the total time spent retrying ``UNAVAILABLE``. Any failure is raised
        as the exception :func:`map_rpc_error` picks; ``workflow_id`` is passed on to it.
        ``before_retry`` is called after each failed attempt that is retried (before the
        back-off), and may change ``request`` for the next attempt.
        """
        if self._closed:
            raise RPCError(f"the connection to {self.address} is closed", code="CANCELLED")
        stream = self._stream if self._stream is not None and CallStream.carries(method) else None
        rpc: Callable[..., Any] = getattr(self._stub, method)
        budget = self.retry_timeout if retry_timeout is None else retry_timeout
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                if stream is not None:
                    return await stream.call(method, request, timeout)
                return await rpc(request, timeout=timeout)
            except grpc.aio.AioRpcError as error:
                elapsed = time.monotonic() - started
                retryable = error.code() == grpc.StatusCode.UNAVAILABLE and not self._closed
                if not retryable or elapsed >= budget:
                    mapped = map_rpc_error(
                        error, address=self.address, method=method, workflow_id=workflow_id
                    )
                    if attempt > 1 and isinstance(mapped, RPCError):
                        mapped.retried = True
                    raise mapped from None
                if before_retry is not None:
                    before_retry()
                delay = min(_backoff(attempt), max(0.0, budget - elapsed))
                _log.debug(
                    "rpc unavailable, retrying",
                    method=method,
                    attempt=attempt,
                    delay=round(delay, 3),
                    detail=_details(error),
                )
                await asyncio.sleep(delay)

    async def hold(
        self, method: str, request: Any, on_message: Callable[[], None] | None = None
    ) -> None:
        """Open the server-streaming ``method`` and read it until the server ends it, calling
        ``on_message()`` for each message it sends.

        Cancelling the caller cancels the stream. Failures are raised as :func:`map_rpc_error`
        picks (no retries: the caller decides when to open it again).
        """
        if self._closed:
            raise RPCError(f"the connection to {self.address} is closed", code="CANCELLED")
        call = getattr(self._stub, method)(request)
        try:
            async for _ in call:
                if on_message is not None:
                    on_message()
        except grpc.aio.AioRpcError as error:
            raise map_rpc_error(error, address=self.address, method=method) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        """Close the channel; calls in flight fail with ``CANCELLED``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._stream is not None:
            await self._stream.close()
        await self._channel.close()

    @property
    def uses_call_stream(self) -> bool:
        """Whether unary calls go on one ``CallStream`` (off with ``CHRONICLE_CALL_STREAM=0``)."""
        return self._stream is not None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed
