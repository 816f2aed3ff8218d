"""Process wiring: pool, migrations, notifier, gRPC server and background loops; ``serve``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable

import grpc

from chronicle.protos.v1 import service_pb2_grpc
from chronicle.server import telemetry
from chronicle.server.config import ServerConfig
from chronicle.server.engine import worker_sessions
from chronicle.server.engine.services import Services
from chronicle.server.frontend.service import WorkflowService
from chronicle.server.matching.queries import QueryRouter
from chronicle.server.matching.remote_queries import RemoteQueries
from chronicle.server.store import durability, notify
from chronicle.server.store.migrate import run_migrations
from chronicle.server.store.notify import Notifier
from chronicle.server.store.pool import Pool, create_pool
from chronicle.server.store.rate_limits import RateLimits
from chronicle.server.timers.loop import TimerLoop

_MiB = 1024 * 1024
MIN_CLIENT_PING_INTERVAL_MS = 5_000
"""Clients (the SDK pings every 30 s by default, ``Client.connect(keepalive_interval=...)``) may
ping this often on a connection without data; more often counts as a ping strike, and repeated
strikes close the connection (gRPC's policy: GOAWAY ``too_many_pings``)."""


def keepalive_options(config: ServerConfig) -> list[tuple[str, int]]:
    """gRPC server options for ``config``'s keepalive pings (``ServerConfig.keepalive_interval``).

    Pings go out on idle connections too, and without a limit on pings between data frames: a
    worker's session stream carries no data for hours, and gRPC's default (2 pings without
    data) would stop checking it after the second.
    """
    return [
        ("grpc.keepalive_time_ms", round(config.keepalive_interval * 1000)),
        ("grpc.keepalive_timeout_ms", round(config.keepalive_timeout * 1000)),
        # What closes the connection (gRPC 1.85): a ping unanswered this long.
        ("grpc.http2.ping_timeout_ms", round(config.keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
    ]


class Server:
    """One server process: ``await start()``, then ``port``, then ``await stop()``."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._pool: Pool | None = None
        self._notifier: Notifier | None = None
        self._services: Services | None = None
        self._grpc: grpc.aio.Server | None = None
        self._background: asyncio.Task[None] | None = None
        self._port = 0
        self.server_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        """This process among the replicas (``pending_queries`` and ``worker_sessions`` rows
        name it); one id per process, new at every start."""
        self._log = telemetry.logger(component="server")

    @property
    def port(self) -> int:
        """The bound port (meaningful after ``start``)."""
        return self._port

    @property
    def services(self) -> Services:
        """The engine's handles (for in-process tools and tests)."""
        assert self._services is not None, "server not started"
        return self._services

    async def start(self) -> None:
        """Open the pool, check its durability settings (``UnsafeDatabaseSettings``), apply
        migrations, bind gRPC and start the background loops."""
        telemetry.configure()
        try:
            self._pool = await create_pool(
                self.config.database_url,
                min_size=self.config.pool_min_size,
                max_size=self.config.pool_max_size,
            )
            async with self._pool.acquire() as conn:
                for warning in await durability.check(conn):
                    self._log.warning("database setting weakens durability", detail=warning)
            await run_migrations(self._pool)
            self._notifier = Notifier(self.config.database_url)
            await self._notifier.connect()
            services = Services(
                self._pool,
                self.config,
                self._notifier,
                QueryRouter(
                    self._notifier, RemoteQueries(self._pool, self._notifier, self.server_id)
                ),
                RateLimits(self._pool),
                self.server_id,
            )
            self._notifier.listen_channel(
                notify.POLL_RELEASED_CHANNEL, services.polling.on_released
            )
            self._services = services
            limit = max(64 * _MiB, 8 * self.config.max_payload_bytes)
            self._grpc = grpc.aio.server(
                options=[
                    ("grpc.max_receive_message_length", limit),
                    ("grpc.max_send_message_length", -1),
                    # A port already in use is an error, not a second server sharing it (gRPC
                    # sets SO_REUSEPORT by default: both would listen, each getting some calls).
                    ("grpc.so_reuseport", 0),
                    *keepalive_options(self.config),
                ]
            )
            service_pb2_grpc.add_WorkflowServiceServicer_to_server(  # type: ignore[no-untyped-call]
                WorkflowService(services), self._grpc
            )
            address = f"{self.config.host}:{self.config.port}"
            try:
                self._port = self._grpc.add_insecure_port(address)
            except RuntimeError as exc:
                raise OSError(f"cannot bind {address}: {exc}") from exc
            if self._port == 0:
                raise OSError(f"cannot bind {address}")
            await self._grpc.start()
            self._background = asyncio.create_task(
                self._run_background(services), name="chronicle-server-background"
            )
        except BaseException:
            await self.stop(grace=0)
            raise
        self._log.info("server started", host=self.config.host, port=self._port)

    async def _run_background(self, services: Services) -> None:
        timers = TimerLoop(services)
        async with asyncio.TaskGroup() as group:
            group.create_task(
                self._supervise("notifier", services.notifier.run), name="chronicle-notifier"
            )
            group.create_task(self._supervise("timers", timers.run), name="chronicle-timers")
            group.create_task(
                self._supervise("reclaims", services.reclaims.run), name="chronicle-reclaims"
            )

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a background loop forever: a crash is logged and the loop restarted."""
        while True:
            try:
                await loop()
            except Exception:
                self._log.exception("background loop crashed; restarting", loop=name)
                await asyncio.sleep(1.0)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting calls, end long polls at once, drain for ``grace`` s, close the pool."""
        if self._notifier is not None:
            self._notifier.stop()
        if self._grpc is not None:
            await self._grpc.stop(grace)
            self._grpc = None
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._background
            self._background = None
        if self._notifier is not None:
            await self._notifier.close()
            self._notifier = None
        if self._pool is not None:
            await self._close_sessions(self._pool, grace)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), timeout=max(grace, 1.0))
        self._pool = None
        self._services = None

    async def _close_sessions(self, pool: Pool, grace: float) -> None:
        """Delete the ``worker_sessions`` rows of this process's sessions (they ended with the
        stop, which treats no worker as lost). A failure is logged: the rows stay until their
        workers open sessions again (docs/decisions.md §8)."""
        try:
            await asyncio.wait_for(
                worker_sessions.close_server(pool, self.server_id), timeout=max(grace, 1.0)
            )
        except Exception as exc:
            self._log.warning("could not delete this server's worker session rows", error=repr(exc))


async def serve(config: ServerConfig) -> None:
    """Run a server until SIGTERM/SIGINT, then stop it cleanly.

    Prints ``chronicle server listening on HOST:PORT`` on stdout once ready.
    """
    server = Server(config)
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        print(f"chronicle server listening on {config.host}:{server.port}", flush=True)
        await stopping.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await server.stop()
        sys.stdout.flush()
