"""Durability: timers survive a restart, the notifier reconnects, run timeouts fire."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta
from pathlib import Path

import asyncpg
import grpc

from chronicle.history import commands, wire
from chronicle.protos.v1 import service_pb2 as pb
from chronicle.protos.v1 import service_pb2_grpc
from chronicle.server.app import Server
from chronicle.server.config import ServerConfig
from tests.server.conftest import command_protos, event_types, start_request


async def test_timer_due_while_down_fires_at_start(database_url: str) -> None:
    config = ServerConfig(database_url=database_url, port=0)
    server = Server(config)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = service_pb2_grpc.WorkflowServiceStub(channel)
            await stub.StartWorkflow(start_request("durable"))
            task = await stub.PollWorkflowTask(
                pb.PollWorkflowTaskRequest(task_queue="q"), timeout=5
            )
            await stub.CompleteWorkflowTask(
                pb.CompleteWorkflowTaskRequest(
                    task_token=task.task_token,
                    commands=command_protos(
                        commands.StartTimer(seq=1, duration=timedelta(milliseconds=300))
                    ),
                )
            )
    finally:
        await server.stop()
    await asyncio.sleep(0.6)  # the timer falls due while no server runs
    server = Server(config)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = service_pb2_grpc.WorkflowServiceStub(channel)
            task = await stub.PollWorkflowTask(
                pb.PollWorkflowTaskRequest(task_queue="q"), timeout=5
            )
            assert "TimerFired" in event_types(task.events)
    finally:
        await server.stop()


async def test_notifier_reconnects(server, stub, database_url: str) -> None:
    admin = await asyncpg.connect(database_url)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> "
            "pg_backend_pid()"
        )
    finally:
        await admin.close()
    assert killed >= 1
    await asyncio.sleep(0.3)  # reconnect happens in the background
    poll = asyncio.ensure_future(
        stub.PollWorkflowTask(pb.PollWorkflowTaskRequest(task_queue="after-reconnect"), timeout=10)
    )
    await asyncio.sleep(0.3)
    await stub.StartWorkflow(start_request("reconnect", task_queue="after-reconnect"))
    task = await asyncio.wait_for(poll, 3)  # woken by NOTIFY, well before the 5 s poll timeout
    assert task.task_token


async def test_run_timeout_closes_the_run(stub) -> None:
    await stub.StartWorkflow(
        start_request(
            "run-timeout", run_timeout=wire.duration_to_proto(timedelta(milliseconds=300))
        )
    )
    result = await stub.GetWorkflowResult(
        pb.GetWorkflowResultRequest(
            workflow_id="run-timeout", wait=wire.duration_to_proto(timedelta(seconds=5))
        ),
        timeout=10,
    )
    assert result.status == "timed_out"
    assert result.failure.kind == "timeout"


async def test_dev_server_runs_and_stops(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chronicle.server",
        "--dev",
        "--port",
        "0",
        "--db-dir",
        str(tmp_path / "pgdata"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 90)).decode().strip()
        assert line.startswith("chronicle server listening on"), line
        port = int(line.rsplit(":", 1)[1])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.WorkflowServiceStub(channel)
            assert (await stub.StartWorkflow(start_request("dev-1"))).started
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert not (tmp_path / "pgdata" / "postmaster.pid").exists()  # Postgres stopped too
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_every_commit_waits_for_the_wal_flush(server) -> None:
    """No transition, dispatch included, is acknowledged before it is durable."""
    assert await server.services.pool.fetchval("SHOW synchronous_commit") == "on"
