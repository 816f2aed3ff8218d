"""A start of a workflow id with no current run writes in one autocommit statement
(``start._create_alone``); any other start takes the locked path, which applies the id
policies. Both must leave the same rows."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import grpc
import pytest

from chronicle.protos.v1 import service_pb2 as pb
from chronicle.protos.v1 import service_pb2_grpc
from chronicle.server.app import Server
from chronicle.server.store.rows import RunKey
from tests.server.conftest import payload_proto, start_request
from tests.server.test_handoff import waiting_polls

EXECUTION_COLUMNS = """
SELECT workflow_type, task_queue, status, next_event_id, state - 'start_time' AS state,
       close_time IS NULL AS open, sticky_identity, last_workflow_task_failure, memo,
       parent_workflow_id, first_run_id = run_id AS first_run, start_request_id
FROM executions WHERE workflow_id = $1 AND run_id = $2"""


async def _rows(db: asyncpg.Connection, workflow_id: str, run_id: str) -> dict[str, Any]:
    execution = await db.fetchrow(EXECUTION_COLUMNS, workflow_id, run_id)
    assert execution is not None
    events = await db.fetch(
        "SELECT event_id, event_type FROM history_events WHERE workflow_id = $1 AND run_id = $2 "
        "ORDER BY event_id",
        workflow_id,
        run_id,
    )
    tasks = await db.fetch(
        "SELECT kind, task_queue, scheduled_event_id FROM tasks WHERE workflow_id = $1 "
        "AND run_id = $2",
        workflow_id,
        run_id,
    )
    timers = await db.fetch(
        "SELECT kind, ref_id FROM timers WHERE workflow_id = $1 AND run_id = $2 ORDER BY kind",
        workflow_id,
        run_id,
    )
    current = await db.fetchrow(
        "SELECT run_id, status, start_request_id FROM current_executions WHERE workflow_id = $1",
        workflow_id,
    )
    assert current is not None
    return {
        "execution": dict(execution),
        "events": [tuple(r) for r in events],
        "tasks": [tuple(r) for r in tasks],
        "timers": [tuple(r) for r in timers],
        "current": (current["run_id"] == run_id, current["status"], current["start_request_id"]),
    }


async def _terminate(stub: service_pb2_grpc.WorkflowServiceStub, workflow_id: str) -> None:
    await stub.TerminateWorkflow(pb.TerminateWorkflowRequest(workflow_id=workflow_id))


async def test_a_new_id_and_a_reused_id_leave_the_same_rows(
    stub: service_pb2_grpc.WorkflowServiceStub, db: asyncpg.Connection
) -> None:
    """The first start of "a" is written alone; "b" is started, terminated and started again,
    which takes the locked path (its id has a current row). The second run of "b" and the run of
    "a" must have the same rows, the ids and times aside."""
    memo = {"k": payload_proto("v")}
    extra = {"memo": memo, "request_id": "r", "signal_name": "go", "signal_input": []}
    alone = await stub.StartWorkflow(start_request("a", **extra))
    await stub.StartWorkflow(start_request("b"))
    await _terminate(stub, "b")
    locked = await stub.StartWorkflow(start_request("b", **extra))
    assert alone.started
    assert locked.started
    rows_alone = await _rows(db, "a", alone.run_id)
    rows_locked = await _rows(db, "b", locked.run_id)
    assert rows_alone == rows_locked
    assert rows_alone["events"] == [
        (1, "WorkflowStarted"),
        (2, "SignalReceived"),
        (3, "WorkflowTaskScheduled"),
    ]
    assert rows_alone["current"] == (True, "running", "r")


async def test_concurrent_starts_of_a_new_id_start_one_run(
    stub: service_pb2_grpc.WorkflowServiceStub, db: asyncpg.Connection
) -> None:
    async def start() -> str:
        try:
            response = await stub.StartWorkflow(start_request("race"))
        except grpc.aio.AioRpcError as exc:
            return str(exc.code())
        assert response.started
        return response.run_id

    outcomes = await asyncio.gather(*(start() for _ in range(8)))
    refused = str(grpc.StatusCode.ALREADY_EXISTS)
    assert outcomes.count(refused) == 7, outcomes
    runs = [o for o in outcomes if o != refused]
    assert len(runs) == 1
    assert await db.fetchval("SELECT count(*) FROM executions WHERE workflow_id = 'race'") == 1
    assert (
        await db.fetchval("SELECT run_id FROM current_executions WHERE workflow_id = 'race'")
        == runs[0]
    )
    assert await db.fetchval("SELECT count(*) FROM history_events WHERE workflow_id = 'race'") == 2


@pytest.mark.parametrize("policy", ["use_existing", "fail"])
async def test_a_start_of_a_running_id_writes_nothing_new(
    stub: service_pb2_grpc.WorkflowServiceStub, db: asyncpg.Connection, policy: str
) -> None:
    first = await stub.StartWorkflow(start_request("taken"))
    before = await db.fetchval("SELECT count(*) FROM history_events")
    if policy == "use_existing":
        again = await stub.StartWorkflow(start_request("taken", id_conflict_policy=policy))
        assert again.run_id == first.run_id
        assert not again.started
    else:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.StartWorkflow(start_request("taken", id_conflict_policy=policy))
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await db.fetchval("SELECT count(*) FROM history_events") == before
    assert await db.fetchval("SELECT count(*) FROM executions WHERE workflow_id = 'taken'") == 1


async def test_a_handed_run_is_known_so_its_first_completion_reads_nothing(
    server: Server, stub: service_pb2_grpc.WorkflowServiceStub
) -> None:
    poll = asyncio.ensure_future(
        stub.PollWorkflowTask(pb.PollWorkflowTaskRequest(task_queue="q", identity="w1"), timeout=5)
    )
    await waiting_polls(server, 1)
    started = await stub.StartWorkflow(start_request("handed"))
    await poll
    known = server.services.known_rows.take(_key("handed", started.run_id))
    assert known is not None
    assert known.state.workflow_task is not None
    assert known.state.workflow_task.started_event_id == 3
    # A run nobody polled for is not remembered: a poll's dispatch would write it next.
    queued = await stub.StartWorkflow(start_request("queued"))
    assert server.services.known_rows.take(_key("queued", queued.run_id)) is None


def _key(workflow_id: str, run_id: str) -> RunKey:
    return RunKey("default", workflow_id, run_id)


async def test_a_start_cancelled_in_its_write_gives_the_poll_back_and_writes_nothing(
    server: Server,
    stub: service_pb2_grpc.WorkflowServiceStub,
    db: asyncpg.Connection,
    database_url: str,
) -> None:
    """Another transaction is inserting the same workflow id, so the start's one statement
    waits for it; the caller gives up meanwhile. The poll the start had taken goes back to
    waiting (it gets the next start), and nothing of the cancelled start is written."""
    poll = asyncio.ensure_future(
        stub.PollWorkflowTask(pb.PollWorkflowTaskRequest(task_queue="q", identity="w1"), timeout=8)
    )
    await waiting_polls(server, 1)
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute(
                "INSERT INTO current_executions (namespace, workflow_id, run_id, status, "
                "start_request_id) VALUES ('default', 'contested', 'other', 'running', '')"
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.StartWorkflow(start_request("contested"), timeout=0.5)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await waiting_polls(server, 1)  # given back
            raise _RollBack
    except _RollBack:
        pass
    finally:
        await holder.close()
    assert await db.fetchval("SELECT count(*) FROM executions WHERE workflow_id = 'contested'") == 0
    started = await stub.StartWorkflow(start_request("next"))
    task = await poll
    assert task.workflow_execution.run_id == started.run_id


class _RollBack(Exception):
    """Ends the holder's transaction without committing its insert."""
