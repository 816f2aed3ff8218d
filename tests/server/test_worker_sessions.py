"""Worker sessions across two in-process replicas on one database (``worker_sessions``).

A worker whose session on replica A ends while it holds a newer session on replica B moved
(A froze, or the path to A broke): A leaves its started tasks alone. A worker lost for real
(no newer session anywhere) still has them timed out at once (docs/decisions.md §8).
``stub`` talks to the ``server`` fixture (A), ``stub_b`` to ``other`` (B).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2

from chronicle.history import commands
from chronicle.history.values import RetryPolicy
from chronicle.protos.v1 import service_pb2 as pb
from chronicle.protos.v1 import service_pb2_grpc
from chronicle.server.app import Server
from tests.server.conftest import command_protos, payload, payload_proto, running_server

FAST = RetryPolicy(initial_interval=timedelta(milliseconds=10))
TASK_TIMEOUT = duration_pb2.Duration(seconds=60)
"""Workflow-task timeout of the tests' runs: far beyond any wait here, so only a lost-worker
pass can time a started workflow task out."""


async def _session(stub: Any, identity: str) -> Any:
    """An established WorkerSession stream for ``identity``."""
    session = stub.WorkerSession(pb.WorkerSessionRequest(identity=identity))
    await asyncio.wait_for(session.read(), 10)
    return session


async def _started_workflow_task(stub: Any, workflow_id: str, identity: str) -> Any:
    await stub.StartWorkflow(
        pb.StartWorkflowRequest(
            workflow_id=workflow_id,
            workflow_type="wf",
            task_queue="q",
            identity="client",
            workflow_task_timeout=TASK_TIMEOUT,
        )
    )
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity=identity), timeout=10
    )
    assert task.workflow_execution.workflow_id == workflow_id
    return task


async def _started_activity(stub: Any, workflow_id: str, identity: str) -> Any:
    """An activity attempt started (eagerly) for worker ``identity``: start-to-close 5 min."""
    task = await _started_workflow_task(stub, workflow_id, identity)
    response = await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity=identity,
            commands=command_protos(
                commands.ScheduleActivity(
                    seq=1, activity_id="a", activity_type="act", retry_policy=FAST
                )
            ),
            max_eager_activities=1,
            eager_activity_types=["act"],
        )
    )
    [activity] = response.activity_tasks
    assert activity.attempt == 1
    return activity


async def _retried(stub: Any) -> Any:
    """The next activity task a poll gets (10 s at most): a retry of a timed-out attempt."""
    return await stub.PollActivityTask(
        pb.PollActivityTaskRequest(task_queue="q", identity="other"), timeout=10
    )


async def _sessions(db: asyncpg.Connection, identity: str) -> list[str]:
    rows = await db.fetch(
        "SELECT server_id FROM worker_sessions WHERE identity = $1 ORDER BY opened_at", identity
    )
    return [row["server_id"] for row in rows]


async def test_a_worker_that_moved_to_another_replica_keeps_its_started_tasks(
    server: Server, other: Server, stub: Any, stub_b: Any, db: asyncpg.Connection
) -> None:
    """The worker's session on A ends while it holds a newer one on B: neither of A's passes
    times out its activity attempt or its workflow task (both answer normally afterwards). A
    worker lost at the same moment on A with no other session ("stayer") is timed out at once."""
    on_a = await _session(stub, "mover")
    activity = await _started_activity(stub, "moved-act", "mover")
    task = await _started_workflow_task(stub, "moved-wft", "mover")
    stayer = await _session(stub, "stayer")
    await _started_activity(stub, "stayer-act", "stayer")
    on_b = await _session(stub_b, "mover")  # the worker gave A up and opened one on B

    on_a.cancel()  # A sees the worker's old session end (A resumed, or its path broke)
    stayer.cancel()
    retried = await _retried(stub)  # A's first pass for the stayer ran
    assert (retried.workflow_execution.workflow_id, retried.attempt) == ("stayer-act", 2)
    # Both of A's passes for the mover have run by now (the second after lost_worker_settle).
    await asyncio.sleep(server.config.lost_worker_settle + 1.0)

    state = await db.fetchval(
        "SELECT state FROM activities WHERE workflow_id = 'moved-act' AND attempt = 1"
    )
    assert state == "started"
    await stub_b.CompleteActivityTask(
        pb.CompleteActivityTaskRequest(
            task_token=activity.task_token, result=payload_proto(1), identity="mover"
        )
    )
    await stub_b.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="mover",
            commands=command_protos(commands.CompleteWorkflow(result=payload(1))),
        )
    )
    on_b.cancel()


async def test_a_worker_lost_on_its_newest_replica_has_its_tasks_timed_out(
    other: Server, stub: Any, stub_b: Any, db: asyncpg.Connection
) -> None:
    """The worker moved from A to B and then B lost it too: B times out the tasks it started
    through A at once (B's session is the newest; A's row was swept), and A, seeing its old
    session end afterwards, finds no newer session open and times out what is left."""
    on_a = await _session(stub, "twice")
    activity = await _started_activity(stub, "twice-act", "twice")
    on_b = await _session(stub_b, "twice")
    on_b.cancel()
    retried = await _retried(stub_b)
    assert (retried.workflow_execution.workflow_id, retried.attempt) == ("twice-act", 2)
    with pytest.raises(grpc.aio.AioRpcError) as info:  # the lost attempt's answer is stale
        await stub.CompleteActivityTask(
            pb.CompleteActivityTaskRequest(task_token=activity.task_token, identity="twice")
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    await asyncio.sleep(other.config.lost_worker_settle + 1.0)  # B's second pass is over
    # A second attempt started for the worker through B while A still holds its old session.
    late = await _started_activity(stub_b, "twice-late", "twice")
    for _ in range(100):  # B's row is gone once B handled its session's end
        if not await _sessions(db, "twice"):
            break
        await asyncio.sleep(0.05)
    assert not await _sessions(db, "twice")
    on_a.cancel()  # A's old session ends: nothing newer is open, so A times out what is left
    retried = await _retried(stub)
    assert (retried.workflow_execution.workflow_id, retried.attempt) == ("twice-late", 2)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CompleteActivityTask(
            pb.CompleteActivityTaskRequest(task_token=late.task_token, identity="twice")
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_older_row_never_keeps_a_lost_worker_s_tasks(
    server: Server, stub: Any, db: asyncpg.Connection
) -> None:
    """A row opened before the ending session (one a killed server left behind) does not count
    as the worker being alive: only a newer session does."""
    session = await _session(stub, "stale")
    opened_at = await db.fetchval("SELECT opened_at FROM worker_sessions WHERE identity = 'stale'")
    await db.execute(
        "INSERT INTO worker_sessions (session_id, namespace, identity, server_id, opened_at) "
        "VALUES ('left-behind', 'default', 'stale', 'killed-server', $1)",
        opened_at - timedelta(seconds=1),
    )
    await _started_activity(stub, "stale-act", "stale")
    session.cancel()
    retried = await _retried(stub)
    assert (retried.workflow_execution.workflow_id, retried.attempt) == ("stale-act", 2)


async def test_rows_go_when_sessions_end_and_when_their_server_stops(
    database_url: str, server: Server, stub: Any, db: asyncpg.Connection
) -> None:
    """A session's row is written when it opens (the database's clock) and deleted when it
    ends; a newer session of the same worker sweeps its older rows; a stopping server deletes
    the rows of the sessions it still held."""
    older = await _session(stub, "ends")
    assert await _sessions(db, "ends") == [server.server_id]
    session = await _session(stub, "ends")  # the same worker, again (its older one is over)
    assert await _sessions(db, "ends") == [server.server_id]
    older.cancel()
    session.cancel()
    for _ in range(100):
        if not await _sessions(db, "ends"):
            break
        await asyncio.sleep(0.05)
    assert not await _sessions(db, "ends")

    async with running_server(database_url) as replica:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{replica.port}")
        try:
            await _session(service_pb2_grpc.WorkflowServiceStub(channel), "stays")
            assert await _sessions(db, "stays") == [replica.server_id]
        finally:
            await replica.stop(grace=1.0)
            await channel.close()
    assert not await _sessions(db, "stays")
