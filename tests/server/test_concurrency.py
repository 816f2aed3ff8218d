"""Many workflows, several concurrent pollers: no deadlocks, no lost or doubled events."""

from __future__ import annotations

import asyncio
import time

import grpc

from chronicle.history import codec, commands, fold, wire
from chronicle.protos.v1 import service_pb2 as pb
from tests.server.conftest import command_protos, event_types, payload_proto, start_request

WORKFLOWS = 20
ACTIVITIES = 3


async def _workflow_worker(stub, identity: str, done: asyncio.Event) -> None:
    while not done.is_set():
        task = await stub.PollWorkflowTask(
            pb.PollWorkflowTaskRequest(task_queue="q", identity=identity), timeout=2
        )
        if not task.task_token:
            continue
        history = await stub.GetWorkflowHistory(
            pb.GetWorkflowHistoryRequest(
                workflow_id=task.workflow_execution.workflow_id,
                run_id=task.workflow_execution.run_id,
            )
        )
        types = event_types(history.events)
        if "ActivityScheduled" not in types:
            cmds = [
                commands.ScheduleActivity(seq=i, activity_id=str(i), activity_type="act")
                for i in range(1, ACTIVITIES + 1)
            ]
        elif types.count("ActivityCompleted") == ACTIVITIES:
            cmds = [commands.CompleteWorkflow()]
        else:
            cmds = []
        try:
            await stub.CompleteWorkflowTask(
                pb.CompleteWorkflowTaskRequest(
                    task_token=task.task_token, identity=identity, commands=command_protos(*cmds)
                )
            )
        except grpc.aio.AioRpcError as exc:  # only a task timed out under load may be stale
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise


async def _activity_worker(stub, done: asyncio.Event) -> None:
    while not done.is_set():
        task = await stub.PollActivityTask(pb.PollActivityTaskRequest(task_queue="q"), timeout=2)
        if task.task_token:
            await stub.CompleteActivityTask(
                pb.CompleteActivityTaskRequest(
                    task_token=task.task_token, result=payload_proto(task.activity_id)
                )
            )


async def test_many_workflows_many_pollers(stub, db) -> None:
    done = asyncio.Event()
    workers = [asyncio.create_task(_workflow_worker(stub, f"w{i}", done)) for i in range(3)]
    workers += [asyncio.create_task(_activity_worker(stub, done)) for _ in range(3)]
    started = time.monotonic()
    try:
        await asyncio.gather(
            *(stub.StartWorkflow(start_request(f"many-{i}")) for i in range(WORKFLOWS))
        )
        results = await asyncio.wait_for(
            asyncio.gather(
                *(
                    stub.GetWorkflowResult(
                        pb.GetWorkflowResultRequest(workflow_id=f"many-{i}"), timeout=60
                    )
                    for i in range(WORKFLOWS)
                )
            ),
            60,
        )
    finally:
        done.set()
        await asyncio.gather(*workers, return_exceptions=True)
    elapsed = time.monotonic() - started
    assert [r.status for r in results] == ["completed"] * WORKFLOWS
    for i in range(WORKFLOWS):
        history = await stub.GetWorkflowHistory(
            pb.GetWorkflowHistoryRequest(workflow_id=f"many-{i}")
        )
        events = wire.events_from_proto(history.events)
        assert [e.id for e in events] == list(range(1, len(events) + 1))
        assert event_types(history.events).count("ActivityCompleted") == ACTIVITIES
        state = await db.fetchval(
            "SELECT state::text FROM executions WHERE workflow_id = $1", f"many-{i}"
        )
        assert fold(events) == codec.state_from_json(state)
    assert await db.fetchval("SELECT count(*) FROM tasks") == 0
    print(f"{WORKFLOWS} workflows x {ACTIVITIES} activities in {elapsed:.2f}s")
