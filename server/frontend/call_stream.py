"""``CallStream``: the service's unary methods multiplexed on one bidirectional stream.

A unary call in grpc.aio costs about twice the latency and server CPU of a message on an open
stream (call set-up, metadata and status per call; figures in docs/call-stream.md). Each
``StreamedCall`` is served by the same servicer method as the unary call, in its own task, so
calls on one stream run concurrently, as unary calls do; the reply carries the method's response,
or the status code and message the unary call would have ended with. A call the caller gives up
on (``cancel``), and every call still in flight when the stream ends, is cancelled, as a unary
call is when its caller goes away: a cancelled long poll must not take a task it cannot hand on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc
from google.protobuf.message import DecodeError, Message

from chronicle.history import wire
from chronicle.protos.v1 import service_pb2
from chronicle.server import telemetry

SERVICE: Final = service_pb2.DESCRIPTOR.services_by_name["WorkflowService"]

UNARY_METHODS: Final[dict[str, type[Message]]] = {
    method.name: getattr(service_pb2, method.input_type.name)
    for method in SERVICE.methods
    if not method.client_streaming and not method.server_streaming
}
"""The methods a ``StreamedCall`` may name, with their request classes."""


MAX_REPLY_BYTES: Final = 64 * 1024 * 1024 - 1024
"""The largest response a reply carries: the SDK's receive limit (64 MiB) less the envelope.
A bigger one is answered RESOURCE_EXHAUSTED, failing that call only, as it would as a unary
call; sent, it would break the stream and every call on it."""


class CallAborted(grpc.aio.AbortError):  # type: ignore[misc]  # grpc.aio is untyped
    """Raised by :meth:`CallContext.abort`: the call ends with this status (an ``AbortError``,
    so the ``rpc`` wrapper lets it through as it does a real abort)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CallContext:
    """What servicer methods use of a ``grpc.aio.ServicerContext``, for one streamed call."""

    __slots__ = ("_deadline",)

    def __init__(self, timeout: float | None) -> None:
        self._deadline = None if timeout is None else time.monotonic() + timeout

    def time_remaining(self) -> float | None:
        """Seconds until the call's deadline, or None without one."""
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        """End the call with ``code`` and ``details`` (raises :class:`CallAborted`)."""
        raise CallAborted(code, details)


Method = Callable[[Message, CallContext], Awaitable[Message]]


async def serve(
    servicer: object,
    context: grpc.aio.ServicerContext[Any, Any],
    stopping: Callable[[], bool],
) -> None:
    """Serve the ``StreamedCall`` messages of one stream until the caller closes it.

    Once ``stopping()`` (the server is shutting down) new calls are refused with UNAVAILABLE,
    as unary calls are then, and the stream ends as soon as no call runs on it, so callers
    reconnect and back off instead of polling a stopping server.
    """
    write_lock = asyncio.Lock()
    in_flight: dict[int, asyncio.Task[None]] = {}
    replying: set[int] = set()
    """Calls writing their reply: a cancel message no longer interrupts them (a write cancelled
    half-way leaves grpc unable to send the next reply on the stream)."""

    async def reply(message: service_pb2.StreamedReply) -> None:
        async with write_lock:
            await context.write(message)

    async def run(call: service_pb2.StreamedCall) -> None:
        answer = await _answer(servicer, call)
        answer.id = call.id
        replying.add(call.id)
        try:
            with contextlib.suppress(Exception):  # the stream ended: nobody to answer
                await reply(answer)
        finally:
            replying.discard(call.id)

    try:
        while True:
            call = await context.read()
            if call is grpc.aio.EOF:
                break
            if call.cancel:
                cancelled = in_flight.get(call.id)
                if cancelled is not None and call.id not in replying:
                    cancelled.cancel()
                continue
            if stopping():
                refused = _status(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
                refused.id = call.id
                await reply(refused)
                if not in_flight:
                    return
                continue
            task = asyncio.create_task(run(call))
            in_flight[call.id] = task
            task.add_done_callback(functools.partial(_forget, in_flight, call.id))
        if in_flight:  # the caller half-closed: finish what it sent, replies included
            await asyncio.gather(*in_flight.values(), return_exceptions=True)
    finally:
        running = list(in_flight.values())
        for task in running:
            task.cancel()
        if running:  # let their transactions unwind before the server closes its pool
            await asyncio.wait(running, timeout=5.0)


def _forget(in_flight: dict[int, asyncio.Task[None]], call_id: int, task: object) -> None:
    if in_flight.get(call_id) is task:
        in_flight.pop(call_id, None)


async def _answer(servicer: object, call: service_pb2.StreamedCall) -> service_pb2.StreamedReply:
    request_class = UNARY_METHODS.get(call.method)
    if request_class is None:
        return _status(
            grpc.StatusCode.UNIMPLEMENTED,
            f"StreamedCall.method: {call.method!r} is not a unary WorkflowService method",
        )
    request = request_class()
    try:
        request.ParseFromString(call.request)
    except DecodeError as exc:
        return _status(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"StreamedCall.request: not a valid {request_class.__name__}: {exc}",
        )
    timeout = wire.duration_from_proto(call, "timeout")
    method: Method = getattr(servicer, call.method)
    try:
        response = await method(
            request, CallContext(timeout.total_seconds() if timeout is not None else None)
        )
    except CallAborted as exc:
        return _status(exc.code, exc.message)
    except Exception as exc:  # the rpc wrapper maps every known error; this is a bug
        telemetry.logger(rpc=call.method).exception("unexpected error on the call stream")
        return _status(grpc.StatusCode.INTERNAL, f"{call.method}: internal error: {exc}")
    encoded = response.SerializeToString()
    if len(encoded) > MAX_REPLY_BYTES:
        return _status(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"{call.method}: the response is {len(encoded)} bytes, over the "
            f"{MAX_REPLY_BYTES}-byte message limit of Chronicle clients",
        )
    return service_pb2.StreamedReply(response=encoded)


def _status(code: grpc.StatusCode, message: str) -> service_pb2.StreamedReply:
    return service_pb2.StreamedReply(code=code.value[0], message=message)
