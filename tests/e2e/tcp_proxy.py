"""A TCP forwarder for end-to-end tests: one stable address in front of a server that can be
replaced (like a load balancer or a DNS name), which shows when a client gives a connection up.

Each accepted connection is forwarded to the target port current when it was accepted; the
target can change at any time (new connections go there, open ones stay where they are).
Bytes are forwarded as they are: gRPC, HTTP/2 pings included, runs end to end unchanged.
``hold`` and ``drop_held`` stand for a silent network drop: the client sees its connection end
while the server, whose replies vanish, does not know yet.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class ProxiedConnection:
    """One client connection and the target it was forwarded to."""

    target: int
    client_closed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the client side ended the connection (EOF or reset)."""
    held: bool = False
    """The server's bytes are dropped instead of forwarded (``TcpProxy.hold``)."""
    dropped: bool = False
    """The client side was cut while the server side stays open (``TcpProxy.drop_held``)."""
    client_writer: asyncio.StreamWriter | None = None


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
        connection.client_writer = writer
        from_client = asyncio.create_task(self._pump(reader, up_writer))
        from_server = asyncio.create_task(self._pump(up_reader, writer, lambda: connection.held))
        self._pumps |= {from_client, from_server}
        from_client.add_done_callback(lambda _: connection.client_closed.set())

        def ended(_: object) -> None:
            writer.transport.abort()
            if not connection.dropped or from_server.done():
                up_writer.transport.abort()

        # Either side's end ends both (abort: a frozen peer must not hold the close up), but
        # a dropped connection's server side stays open until the server ends it.
        for pump in (from_client, from_server):
            pump.add_done_callback(ended)
            pump.add_done_callback(self._pumps.discard)
        await asyncio.gather(from_client, from_server, return_exceptions=True)

    @staticmethod
    async def _pump(
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        discard: Callable[[], bool] = lambda: False,
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                if discard():
                    continue
                sink.write(data)
                await sink.drain()

    def hold(self) -> None:
        """From now on drop what the server sends on every open connection: its replies
        vanish, as on a network path that went silent (the client's bytes still go through)."""
        for connection in self.connections:
            connection.held = True

    def drop_held(self) -> None:
        """Cut the client side of every held connection (the client sees it end) and keep the
        server side open, dropping what it sends: the server does not see the end until its
        keepalive gives the connection up. New connections are accepted as before."""
        for connection in self.connections:
            if connection.held and connection.client_writer is not None:
                connection.dropped = True
                connection.client_writer.transport.abort()

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
