"""Activity heartbeats: throttled ``HeartbeatActivityTask`` calls for one running activity.

The activity's context calls ``Heartbeater.heartbeat`` (from any thread); the heartbeater sends
the latest details from the worker's loop, at most one call per interval, and when the server
answers ``cancel_requested`` (or no longer knows the task) sets the activity's ``cancelled``
event and calls ``on_cancel``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol

from chronicle.history import wire
from chronicle.history.payloads import to_payloads
from chronicle.protos.v1 import service_pb2
from chronicle.sdk import _grpc
from chronicle.sdk._inline import InlineRun

__all__ = ["DEFAULT_HEARTBEAT_INTERVAL", "HeartbeatWorker", "Heartbeater", "heartbeat_interval"]

DEFAULT_HEARTBEAT_INTERVAL = 30.0
"""Heartbeat throttle when the activity has no heartbeat timeout."""


def heartbeat_interval(heartbeat_timeout: timedelta | None) -> float:
    """Seconds between heartbeats: 80 % of the heartbeat timeout, else the default."""
    return (
        heartbeat_timeout.total_seconds() * 0.8 if heartbeat_timeout else DEFAULT_HEARTBEAT_INTERVAL
    )


class HeartbeatWorker(Protocol):
    """The activity worker as its heartbeaters see it: where, and as whom, heartbeats go."""

    namespace: str
    identity: str
    connection: _grpc.Connection


class Heartbeater:
    """Sends an activity's heartbeats: the first at once, then at most one per ``interval``.

    ``heartbeat`` may be called from any thread; it only records the latest details and wakes
    the sender on the worker's loop, so user code never waits on the network.
    """

    def __init__(
        self,
        worker: HeartbeatWorker,
        task_token: bytes,
        interval: float,
        cancelled: threading.Event,
        on_cancel: Callable[[], object],
        log: Any,
        run: InlineRun | None = None,
    ) -> None:
        self._worker = worker
        self._run = run
        self._token = task_token
        self._interval = interval
        self._cancelled = cancelled
        self._on_cancel = on_cancel
        self._log = log
        self._loop = asyncio.get_running_loop()
        self._pending: tuple[Any, ...] | None = None
        self._sender: asyncio.Task[None] | None = None

    def heartbeat(self, details: tuple[Any, ...]) -> None:
        """Record ``details`` for the next heartbeat (encoding errors raise here, to the caller)."""
        encoded = to_payloads(details)
        try:
            self._loop.call_soon_threadsafe(self._record, encoded)
        except RuntimeError:  # the worker's loop is gone (shut down under a stuck thread)
            pass

    def _record(self, encoded: Any) -> None:
        self._pending = encoded
        if self._sender is None or self._sender.done():
            self._sender = self._loop.create_task(self._send_loop())

    async def _send_loop(self) -> None:
        run = self._run
        if run is not None and not await run.recorded():
            self._log.info("heartbeat: the inline activity's schedule was not recorded")
            self._cancel()
            return
        while self._pending is not None:
            details, self._pending = self._pending, None
            request = service_pb2.HeartbeatActivityTaskRequest(
                namespace=self._worker.namespace,
                task_token=self._token,
                details=wire.payloads_to_proto(details),
                identity=self._worker.identity,
            )
            try:
                response = await self._worker.connection.call("HeartbeatActivityTask", request)
            except _grpc.NotFoundError:
                self._log.info("heartbeat: activity no longer known to the server; cancelling")
                self._cancel()
                return
            except Exception as exc:
                self._log.warning("heartbeat failed", error=str(exc))
            else:
                if response.cancel_requested:
                    self._log.info("activity cancellation requested")
                    self._cancel()
                    return
            await asyncio.sleep(self._interval)

    def _cancel(self) -> None:
        if not self._cancelled.is_set():
            self._cancelled.set()
            self._on_cancel()

    def stop(self) -> None:
        """Stop sending (the activity is over)."""
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
