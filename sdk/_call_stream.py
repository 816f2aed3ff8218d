"""Unary calls sent on one long-lived ``CallStream`` (docs/call-stream.md).

A message on an open stream costs about half the latency and server CPU of a unary call. The
stream is opened on first use; a reader task hands each ``StreamedReply`` to the waiting call by
id. A reply with a non-zero code becomes the ``grpc.aio.AioRpcError`` the unary call would have
raised, so :class:`~chronicle.sdk._grpc.Connection` maps and retries both alike. When the stream
breaks, every call in flight fails with ``UNAVAILABLE`` (retried like a dropped unary call: task
completions are idempotent on the server) and the next call opens a new stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any, Final

import grpc
import grpc.aio
from google.protobuf.message import Message

from chronicle.protos.v1 import service_pb2

_SERVICE: Final = service_pb2.DESCRIPTOR.services_by_name["WorkflowService"]
_RESPONSE_CLASSES: Final[dict[str, type[Message]]] = {
    method.name: getattr(service_pb2, method.output_type.name)
    for method in _SERVICE.methods
    if not method.client_streaming and not method.server_streaming
}
_NO_METADATA: Final = grpc.aio.Metadata()

MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
"""The largest message a connection sends or receives (its channel's limits)."""


def _error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, _NO_METADATA, _NO_METADATA, details)


_CODES: Final = {code.value[0]: code for code in grpc.StatusCode}


class _Stream:
    """One open ``CallStream`` call, its reader, and the calls waiting for a reply on it."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self._write_lock = asyncio.Lock()
        self._cancels: set[asyncio.Task[None]] = set()
        self.pending: dict[int, asyncio.Future[service_pb2.StreamedReply]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        detail = "the server ended the call stream"
        try:
            while True:
                reply = await self.call.read()
                if reply is grpc.aio.EOF:
                    break
                waiting = self.pending.pop(reply.id, None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(reply)
        except grpc.aio.AioRpcError as exc:
            detail = f"call stream broke: {exc.details() or exc.code().name}"
        finally:  # also when the call was cancelled (read raises CancelledError)
            self.fail(detail)

    def fail(self, detail: str, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        """End the stream: every call waiting on it fails with ``code`` (UNAVAILABLE: retried)."""
        self.call.cancel()
        error = _error(code, detail)
        pending, self.pending = self.pending, {}
        for waiting in pending.values():
            if not waiting.done():
                waiting.set_exception(error)

    async def send(self, message: service_pb2.StreamedCall) -> None:
        """Write ``message``; a failed write fails the stream (and so the calls waiting on it).

        Shielded: a caller cancelled while its message is being written must not cancel the
        stream that the other calls share."""
        await asyncio.shield(self._write(message))

    def cancel(self, call_id: int) -> None:
        """Tell the server to cancel call ``call_id`` (in the background; no reply follows)."""
        if self.broken:
            return
        task = asyncio.create_task(self._write(service_pb2.StreamedCall(id=call_id, cancel=True)))
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    async def _write(self, message: service_pb2.StreamedCall) -> None:
        async with self._write_lock:  # grpc.aio allows one write at a time
            try:
                await self.call.write(message)
            except (
                grpc.aio.AioRpcError,
                grpc.aio.UsageError,
                asyncio.InvalidStateError,
                asyncio.CancelledError,  # the stream was cancelled (broken or closed) meanwhile
            ) as exc:
                self.fail(f"call stream broke: {exc!r}")

    @property
    def broken(self) -> bool:
        """Whether the stream has ended (a new call needs a new stream)."""
        return self.call.done() or self.reader.done()


class CallStream:
    """The ``CallStream`` of a connection, shared by all its calls; reopened when it breaks."""

    def __init__(self, open_stream: Any) -> None:
        self._open_stream = open_stream  # the stub's CallStream method
        self._ids = itertools.count(1)
        self._stream: _Stream | None = None

    @staticmethod
    def carries(method: str) -> bool:
        """Whether ``method`` is a unary method (the ones a stream can carry)."""
        return method in _RESPONSE_CLASSES

    async def call(self, method: str, request: Message, timeout: float | None) -> Any:
        """Send one call and return its response; raises ``grpc.aio.AioRpcError`` as the unary
        call would (``DEADLINE_EXCEEDED`` after ``timeout`` seconds)."""
        message = service_pb2.StreamedCall(
            id=next(self._ids), method=method, request=request.SerializeToString()
        )
        if timeout is not None:
            message.timeout.FromNanoseconds(int(timeout * 1e9))
        if message.ByteSize() > MAX_MESSAGE_BYTES:  # sent, it would break the shared stream
            raise _error(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the {method} request is {message.ByteSize()} bytes, over the "
                f"{MAX_MESSAGE_BYTES}-byte message limit",
            )
        reply_future: asyncio.Future[service_pb2.StreamedReply] = (
            asyncio.get_running_loop().create_future()
        )
        stream = self._stream
        if stream is None or stream.broken:
            stream = self._stream = _Stream(self._open_stream())
        # registered before sending, so a break fails just the calls sent on the broken stream
        stream.pending[message.id] = reply_future
        try:
            async with asyncio.timeout(timeout):
                await stream.send(message)
                reply = await reply_future
        except (TimeoutError, asyncio.CancelledError) as exc:
            if reply_future.cancelled() or not reply_future.done():  # no reply came
                stream.cancel(message.id)  # so a cancelled long poll takes no task on the server
            if isinstance(exc, TimeoutError):
                raise _error(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded") from None
            raise
        finally:
            stream.pending.pop(message.id, None)
        if reply.code:
            raise _error(_CODES.get(reply.code, grpc.StatusCode.UNKNOWN), reply.message)
        response = _RESPONSE_CLASSES[method]()
        response.ParseFromString(reply.response)
        return response

    async def close(self) -> None:
        """Cancel the stream and its reader (calls in flight fail with CANCELLED)."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        stream.fail("the connection was closed", grpc.StatusCode.CANCELLED)
        stream.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await stream.reader
