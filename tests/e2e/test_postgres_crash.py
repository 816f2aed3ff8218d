"""Crash safety of the database itself: Postgres (postmaster and every backend) is SIGKILLed
while many workflows commit steps, and restarted on the same data directory and port.

The server rides out the outage: calls made while Postgres is down fail at once with
UNAVAILABLE (never hang, never INTERNAL), its pool and notifier reconnect, and the worker's
retries carry on once Postgres is back. Afterwards every workflow has its right result, every
history is well formed with each step recorded once, and every event a client read before the
kill (so, every event the server acknowledged as committed) is still there.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from chronicle import Client
from chronicle.history.events import Event
from chronicle.protos.v1 import service_pb2 as pb
from chronicle.protos.v1 import service_pb2_grpc
from chronicle.sdk._grpc import ServerUnavailableError
from tests.e2e import outage_workflows as ow
from tests.e2e.processes import ManagedProcess, ServerProcess, free_port, start_worker
from tests.postgres_process import PostgresProcess, hold_commits, wait_held

MODULE = "tests.e2e.outage_workflows"
QUEUE = "pg-crash"
WORKFLOWS = 12
STEPS = 10
OUTAGE = 1.5
"""Seconds Postgres stays down (long enough for the worker's calls to fail and back off)."""
WAIT = 20.0
"""Seconds the workflows get to finish after the restart (their task timeouts are 60 s)."""


class HistoryReader:
    """Reads the workflows' histories over and over, keeping every answer: each is what the
    server acknowledged as committed when it answered."""

    def __init__(self, client: Client, workflow_ids: list[str]) -> None:
        self.client = client
        self.workflow_ids = workflow_ids
        self.reads: list[tuple[str, list[Event]]] = []
        self.latest: dict[str, list[Event]] = {}

    def completed_steps(self) -> int:
        """ActivityCompleted events in the latest read of each history."""
        return sum(
            sum(1 for e in events if e.type == "ActivityCompleted")
            for events in self.latest.values()
        )

    async def run(self) -> None:
        """Read each history in turn, forever (the client retries while the server is down)."""
        while True:
            for workflow_id in self.workflow_ids:
                events = await self.client.get_handle(workflow_id).history()
                self.reads.append((workflow_id, events))
                self.latest[workflow_id] = events
                await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def reading(reader: HistoryReader) -> AsyncIterator[HistoryReader]:
    """Run ``reader`` in the background for the duration of the block."""
    task = asyncio.create_task(reader.run())
    try:
        yield reader
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_until(condition: Any, timeout: float, what: str) -> None:
    """Wait until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not after {timeout}s"
        await asyncio.sleep(0.02)


async def probe_unavailable(address: str, client: Client) -> list[str]:
    """Calls made while Postgres is down: each must fail at once with UNAVAILABLE, a message
    saying the database is unavailable. Returns their messages."""
    messages = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.WorkflowServiceStub(channel)
        calls = [
            stub.DescribeWorkflow(pb.DescribeWorkflowRequest(workflow_id="pg-crash-0")),
            stub.StartWorkflow(
                pb.StartWorkflowRequest(
                    workflow_id="pg-crash-probe",
                    workflow_type="steps_and_timer",
                    task_queue="pg-crash-probe",
                    request_id="probe",
                )
            ),
            stub.GetWorkflowHistory(pb.GetWorkflowHistoryRequest(workflow_id="pg-crash-1")),
            stub.PollWorkflowTask(pb.PollWorkflowTaskRequest(task_queue="pg-crash-probe")),
            stub.PollActivityTask(pb.PollActivityTaskRequest(task_queue="pg-crash-probe")),
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await asyncio.wait_for(call, 10)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value
            assert "database unavailable" in str(failed.value.details())
            assert time.monotonic() - started < 5, "a call waited instead of failing"
            messages.append(str(failed.value.details()))
    # The SDK's call stream carries the same status; with no retry budget it is raised as is.
    request = pb.DescribeWorkflowRequest(workflow_id="pg-crash-0")
    with pytest.raises(ServerUnavailableError, match="database unavailable"):
        await client.connection.call("DescribeWorkflow", request, retry_timeout=0)
    return messages


async def stuck_report(client: Client, workflow_ids: list[str]) -> str:
    """For a failure message: the last events and pending work of each unfinished workflow."""
    lines = []
    for workflow_id in workflow_ids:
        handle = client.get_handle(workflow_id)
        events = await handle.history()
        if events[-1].type == "WorkflowCompleted":
            continue
        description = await handle.describe()
        lines.append(f"{workflow_id}: {description}")
        lines += [f"  {e.id} {e.time.time()} {e.type} {e.attributes}" for e in events[-6:]]
    return "\n".join(lines)


def assert_well_formed(events: list[Event], steps: int) -> None:
    """Ids 1..n; each step scheduled once and completed once; one timer; one close."""
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert events[0].type == "WorkflowStarted"
    scheduled = [e for e in events if e.type == "ActivityScheduled"]
    assert len(scheduled) == steps
    assert len({e.attributes.seq for e in scheduled}) == steps
    completed = Counter(
        e.attributes.scheduled_event_id for e in events if e.type == "ActivityCompleted"
    )
    assert completed == Counter({e.id: 1 for e in scheduled})
    assert [e.type for e in events].count("TimerStarted") == 1
    assert [e.type for e in events].count("TimerFired") == 1
    assert [e.type for e in events].count("WorkflowCompleted") == 1
    assert events[-1].type == "WorkflowCompleted"
    # workflow tasks: each scheduled one is started at most once at a time and closed once
    opened = 0
    for event in events:
        if event.type == "WorkflowTaskScheduled":
            opened += 1
        elif event.type in ("WorkflowTaskCompleted", "WorkflowTaskFailed", "WorkflowTaskTimedOut"):
            opened -= 1
        assert opened in (0, 1), f"event {event.id}: {opened} workflow tasks open"


@pytest.mark.parametrize("moment", ["any", "commits-held"])
async def test_postgres_sigkill_mid_flight_loses_nothing_and_duplicates_nothing(
    own_postgres: PostgresProcess, own_database_url: str, moment: str
) -> None:
    """``any``: the kill strikes whatever is going on. ``commits-held``: it strikes once
    commits of the server are flushed but not yet answered (``hold_commits``), the worst
    moment: the server cannot know they committed, and their callers get no answer."""
    postgres = own_postgres
    server = ServerProcess(own_database_url, free_port()).start_listening()
    worker: ManagedProcess | None = None
    client = await Client.connect(server.address)
    try:
        worker = start_worker(server.address, MODULE, QUEUE)
        ids = [f"pg-crash-{i}" for i in range(WORKFLOWS)]
        handles = [
            await client.start(
                ow.steps_and_timer,
                100 * i,
                STEPS,
                1 + i % STEPS,  # timers at different steps: at any time, some commit steps
                id=workflow_id,
                task_queue=QUEUE,
                task_timeout=ow.TIMEOUT,
            )
            for i, workflow_id in enumerate(ids)
        ]
        reader = HistoryReader(client, ids)
        async with reading(reader):
            await wait_until(
                lambda: reader.completed_steps() >= WORKFLOWS * STEPS * 2 // 5, 30, "progress"
            )
            if moment == "commits-held":
                await hold_commits(postgres.url())
                await wait_held(postgres.url(), "chronicle-server")
                await asyncio.sleep(0.3)  # more may follow
            read_before_kill = len(reader.reads)
            killed_at = time.time()
            postgres.kill()
            postgres.forget_altered_settings()
            messages = await probe_unavailable(server.address, client)
            await asyncio.sleep(OUTAGE)
            assert server.alive, f"the server died with Postgres:\n{server.log()}"
            offset = len(postgres.log_since())
            postgres.start()
            restarted_at = time.time()
            assert "automatic recovery in progress" in postgres.log_since(offset)
            try:
                results = await asyncio.wait_for(
                    asyncio.gather(*(handle.result() for handle in handles)), WAIT
                )
            except TimeoutError:
                raise AssertionError(
                    f"workflows not finished {WAIT} s after the restart (their task "
                    f"timeouts are {ow.TIMEOUT}):\n{await stuck_report(client, ids)}\n"
                    f"--- server\n{server.log()}\n--- worker\n{worker.log()}"
                ) from None
        assert results == [ow.expected(100 * i, STEPS) for i in range(WORKFLOWS)]
        finals = {handle.id: await handle.history() for handle in handles}
        for events in finals.values():
            assert_well_formed(events, STEPS)
        # Every history read, before the kill (acknowledged as committed) or after, is a
        # prefix of the final one: nothing acknowledged was lost or rewritten.
        assert read_before_kill > 0, "no history was read before the kill"
        for workflow_id, events in reader.reads:
            assert finals[workflow_id][: len(events)] == events, workflow_id
        # The kill struck mid-flight: steps had committed before it, and workflows were open.
        steps = [e for events in finals.values() for e in events if e.type == "ActivityCompleted"]
        assert any(e.time.timestamp() < killed_at for e in steps)
        assert any(events[-1].time.timestamp() > restarted_at for events in finals.values())
        # The processes rode it out: no crash, no INTERNAL, structured logs only.
        assert server.alive, server.log()
        assert worker.alive, worker.log()
        for unwanted in ("database error", "unexpected error", "Traceback"):
            assert unwanted not in server.log(), server.log()
        assert "[error" not in worker.log(), worker.log()  # e.g. an outcome it could not report
        assert all(m.startswith("database unavailable") for m in messages), messages
    finally:
        await client.close()
        if worker is not None:
            worker.kill()
        server.kill()
