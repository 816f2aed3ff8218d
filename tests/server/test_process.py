"""``python -m chronicle.server``: ready line, clean SIGTERM, one-line errors."""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc

from chronicle.protos.v1 import service_pb2 as pb
from chronicle.protos.v1 import service_pb2_grpc
from tests.server.conftest import start_request


async def _run(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chronicle.server",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_serves_and_stops_on_sigterm(database_url: str) -> None:
    process = await _run("--database-url", database_url, "--port", "0")
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        assert line.startswith("chronicle server listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.WorkflowServiceStub(channel)
            assert (await stub.StartWorkflow(start_request("proc-1"))).started
            poll = asyncio.ensure_future(
                stub.PollWorkflowTask(pb.PollWorkflowTaskRequest(task_queue="idle"), timeout=30)
            )
            await asyncio.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 15) == 0
            try:  # the long poll ended promptly, empty or cut off by the shutdown
                await asyncio.wait_for(poll, 5)
            except grpc.aio.AioRpcError:
                pass
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_unreachable_database_is_one_line() -> None:
    process = await _run("--database-url", "postgresql://nobody@127.0.0.1:1/none", "--port", "0")
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode != 0
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("chronicle server: error:")


async def test_bad_arguments_are_one_line() -> None:
    process = await _run("--port", "not-a-port")
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert len(stderr.decode().strip().splitlines()) == 1
