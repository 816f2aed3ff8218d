"""What one request/response costs between two processes: ``python -m bench.call_cost``.

A unary call against a message pair on an open bidirectional stream (what the call stream
uses, docs/call-stream.md), with grpc.aio on loopback, 300-byte messages, a handler that does
nothing. Each is measured on asyncio's loop and on uvloop, and with each of gRPC's I/O engines:
EventEngine (gRPC's default since 1.80) and the poll-based I/O Chronicle's processes choose
(``chronicle/grpc_io.py``). Prints the median and p95 round trip and the CPU per call of the
client and of the server process. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from chronicle import eventloop, grpc_io

MESSAGE = b"x" * 300
WARM_UP, CALLS = 500, 5000


def _same(data: bytes) -> bytes:
    return data


async def _serve(port: int) -> None:
    async def unary(request: bytes, context: Any) -> bytes:
        return MESSAGE

    async def stream(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for _ in requests:
            yield MESSAGE

    async def cpu(request: bytes, context: Any) -> bytes:
        return struct.pack("d", time.process_time())

    def unary_handler(fn: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=_same, response_serializer=_same
        )

    handlers = {
        "Unary": unary_handler(unary),
        "Cpu": unary_handler(cpu),
        "Stream": grpc.stream_stream_rpc_method_handler(
            stream, request_deserializer=_same, response_serializer=_same
        ),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.B", handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


async def _measure(port: int, variant: str) -> tuple[float, float, float, float]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    await channel.channel_ready()
    cpu = channel.unary_unary("/bench.B/Cpu", request_serializer=_same, response_deserializer=_same)
    if variant == "unary":
        unary = channel.unary_unary(
            "/bench.B/Unary", request_serializer=_same, response_deserializer=_same
        )

        async def once() -> None:
            await unary(MESSAGE)
    else:
        call = channel.stream_stream(
            "/bench.B/Stream", request_serializer=_same, response_deserializer=_same
        )()

        async def once() -> None:
            await call.write(MESSAGE)
            await call.read()

    for _ in range(WARM_UP):
        await once()
    server_before = struct.unpack("d", await cpu(b""))[0]
    client_before = time.process_time()
    samples = []
    for _ in range(CALLS):
        began = time.perf_counter()
        await once()
        samples.append(time.perf_counter() - began)
    client_cpu = (time.process_time() - client_before) / CALLS
    server_cpu = (struct.unpack("d", await cpu(b""))[0] - server_before) / CALLS
    await channel.close()
    samples.sort()
    return samples[CALLS // 2], samples[int(CALLS * 0.95)], client_cpu, server_cpu


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.call_cost", description=__doc__)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), help=argparse.SUPPRESS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    options = parser.parse_args()
    use_uvloop = options.loop == "uvloop"
    if options.serve:
        (eventloop.run if use_uvloop else asyncio.run)(_serve(options.serve))
        return
    if options.measure:
        port_text, variant = options.measure.split(":")
        run = eventloop.run if use_uvloop else asyncio.run
        print(" ".join(f"{v * 1e6:.0f}" for v in run(_measure(int(port_text), variant))))
        return
    columns = f"{'median µs':>10} {'p95 µs':>8} {'client CPU':>11} {'server CPU':>11}"
    print(f"{'gRPC I/O':13} {'loop':8} {'variant':7} {columns}")
    engines = {"event engine": "", "polling": ",".join(grpc_io.POLLING_IO_EXPERIMENTS)}
    for engine, experiments in engines.items():
        env = {**os.environ, "GRPC_EXPERIMENTS": experiments}
        for loop in ("asyncio", "uvloop"):
            for variant, figures in _measure_pair(loop, env):
                median, p95, client_cpu, server_cpu = figures
                print(
                    f"{engine:13} {loop:8} {variant:7} {median:>10} {p95:>8} {client_cpu:>11} "
                    f"{server_cpu:>11}"
                )


def _measure_pair(loop: str, env: dict[str, str]) -> list[tuple[str, list[str]]]:
    """Both variants against one server subprocess, both processes with ``env``."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.call_cost", "--serve", str(port), "--loop", loop],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise SystemExit("the bench server did not start")
        return [
            (
                variant,
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.call_cost",
                        "--loop",
                        loop,
                        "--measure",
                        f"{port}:{variant}",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=env,
                ).stdout.split(),
            )
            for variant in ("unary", "stream")
        ]
    finally:
        server.kill()
        server.wait(10)


if __name__ == "__main__":
    main()
