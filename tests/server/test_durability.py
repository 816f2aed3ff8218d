"""Durability: timers survive a restart, the notifier reconnects, run timeouts fire."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest

from chronicle.history import commands, wire
from chronicle.protos.v1 import service_pb2 as pb
from chronicle.protos.v1 import service_pb2_grpc
from chronicle.server.app import Server
from chronicle.server.config import ServerConfig
from chronicle.server.store import durability
from tests.postgres_process import PostgresProcess
from tests.server.conftest import command_protos, event_types, running_server, start_request


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


async def test_the_server_s_connections_commit_synchronously_whatever_it_is_told(
    database_url: str,
) -> None:
    """Every commit waits for its WAL flush: the server's connections run with
    ``synchronous_commit=on`` even when the database and the URL's session options say
    ``off`` (tests/server/test_db_outage.py shows the commits themselves waiting)."""
    admin = await asyncpg.connect(database_url)
    try:
        name = await admin.fetchval("SELECT current_database()")
        await admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    finally:
        await admin.close()
    separator = "&" if "?" in database_url else "?"
    told_off = f"{database_url}{separator}options=-c%20synchronous_commit%3Doff"
    async with running_server(told_off) as server:
        pool = server.services.pool
        async with (
            pool.acquire() as first,
            pool.acquire() as second,
            pool.acquire() as third,
        ):
            for conn in (first, second, third):
                setting = await conn.fetchrow(
                    "SELECT setting, source FROM pg_settings WHERE name = 'synchronous_commit'"
                )
                assert (setting["setting"], setting["source"]) == ("on", "client")


async def test_a_database_connection_cut_mid_call_is_unavailable_not_internal(
    server: Server, stub: service_pb2_grpc.WorkflowServiceStub, database_url: str
) -> None:
    """Postgres ends a backend that is running a call (a fast shutdown, a failover, an
    operator's ``pg_terminate_backend``: 57P01): the call fails with UNAVAILABLE, which
    clients and workers retry, and a retry goes through."""
    await stub.StartWorkflow(start_request("cut"))
    admin = await asyncpg.connect(database_url)
    try:
        async with admin.transaction():
            await admin.execute("SELECT FROM executions WHERE workflow_id = 'cut' FOR UPDATE")
            request = pb.SignalWorkflowRequest(
                workflow_id="cut", signal_name="go", request_id="cut-1"
            )
            signal = asyncio.ensure_future(stub.SignalWorkflow(request, timeout=10))
            pid = await _waiting_for_a_lock(admin)
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await signal
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value
        assert "database unavailable" in str(failed.value.details())
        await stub.SignalWorkflow(request, timeout=10)
        assert event_types((await _history(stub, "cut")).events).count("SignalReceived") == 1
    finally:
        await admin.close()


async def _waiting_for_a_lock(admin: asyncpg.Connection) -> int:
    """The pid of the server's backend that waits for a row lock."""
    for _ in range(500):
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'chronicle-server' "
            "AND wait_event_type = 'Lock' AND datname = current_database()"
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.02)
    raise AssertionError("no server backend waits for the lock")


async def _history(
    stub: service_pb2_grpc.WorkflowServiceStub, workflow_id: str
) -> pb.GetWorkflowHistoryResponse:
    return await stub.GetWorkflowHistory(pb.GetWorkflowHistoryRequest(workflow_id=workflow_id))


async def test_a_connection_that_would_not_wait_for_the_flush_is_refused(
    database_url: str,
) -> None:
    """What the server checks on a pooled connection at start (a pooler may have dropped its
    ``synchronous_commit=on``): refused, naming the setting and where it came from."""
    conn = await asyncpg.connect(database_url)
    try:
        assert await durability.check(conn) == []
        await conn.execute("SET synchronous_commit = off")
        with pytest.raises(
            durability.UnsafeDatabaseSettings,
            match=r"synchronous_commit is 'off' \(set by: session\), not 'on'",
        ):
            await durability.check(conn)
    finally:
        await conn.close()


async def test_fsync_off_is_reported(own_postgres: PostgresProcess) -> None:
    """``fsync`` is the whole Postgres server's: the server cannot set it, so it warns."""
    own_postgres.stop()
    own_postgres.start(settings={"fsync": "off"})
    conn = await asyncpg.connect(own_postgres.url())
    try:
        [warning] = await durability.check(conn)
    finally:
        await conn.close()
    assert warning.startswith("fsync is 'off' (set by: command line)")


async def test_a_timer_cut_off_by_a_terminated_connection_fires_without_a_postponement(
    server: Server, stub: service_pb2_grpc.WorkflowServiceStub, database_url: str
) -> None:
    """The timer loop's transaction is cut (57P01) while it fires a timer: the database, not
    the timer, failed, so the timer fires as soon as it can, not after the 10 s postponement
    of a timer whose handler fails."""
    await stub.StartWorkflow(start_request("cut-timer"))
    task = await stub.PollWorkflowTask(pb.PollWorkflowTaskRequest(task_queue="q"), timeout=5)
    timer = commands.StartTimer(seq=1, duration=timedelta(milliseconds=500))
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(task_token=task.task_token, commands=command_protos(timer))
    )
    admin = await asyncpg.connect(database_url)
    try:
        async with admin.transaction():
            await admin.execute("SELECT FROM executions WHERE workflow_id = 'cut-timer' FOR UPDATE")
            firing = await _waiting_for_a_lock(admin)  # the timer loop, firing the timer
            await admin.execute("SELECT pg_terminate_backend($1)", firing)
            cut_at = time.monotonic()
        while "TimerFired" not in event_types((await _history(stub, "cut-timer")).events):
            assert time.monotonic() - cut_at < 8, "the timer was postponed (10 s)"
            await asyncio.sleep(0.05)
    finally:
        await admin.close()
