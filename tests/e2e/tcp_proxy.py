"""A TCP forwarder for end-to-end tests: one stable address in front of a server that can be
replaced (like a load balancer or a DNS name), which shows when a client gives a connection up.

Each accepted connection is forwarded to the target port current when it was accepted; the
target can change at any time (new connections go there, open ones stay where they are).
Bytes are forwarded as they are: gRPC, HTTP/2 pings included, runs end to end unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class ProxiedConnection:
    """One client connection and the target it was forwarded to."""

    target: int
    client_closed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the client side ended the connection (EOF or reset)."""


class TcpProxy:
    """Listens on 127.0.0.1 (``port``) and forwards each connection to ``target``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.connections: list[ProxiedConnection] = []
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> TcpProxy:
        """Start listening on a free port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        """The port clients connect to."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> str:
        """host:port for clients."""
        return f"127.0.0.1:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = ProxiedConnection(self.target)
        self.connections.append(connection)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", connection.target)
        except OSError:
            connection.client_closed.set()
            writer.transport.abort()
            return
        self._writers += [writer, up_writer]
        from_client = asyncio.create_task(self._pump(reader, up_writer))
        from_server = asyncio.create_task(self._pump(up_reader, writer))
        self._pumps |= {from_client, from_server}
        from_client.add_done_callback(lambda _: connection.client_closed.set())
        # Either side's end ends both (abort: a frozen peer must not hold the close up).
        for pump in (from_client, from_server):
            pump.add_done_callback(
                lambda _: (writer.transport.abort(), up_writer.transport.abort())
            )
            pump.add_done_callback(self._pumps.discard)
        await asyncio.gather(from_client, from_server, return_exceptions=True)

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()

    def cut(self) -> None:
        """Cut every forwarded connection (abort both sides); new ones are still accepted."""
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        """Stop listening and cut every forwarded connection."""
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
