"""The workflow half of ``Worker`` (sticky cache, task failures, deadlocks) against a fake server
and a scripted stand-in for ``WorkflowInstance``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chronicle.history import wire
from chronicle.history.commands import Command, CompleteWorkflow, StartTimer
from chronicle.history.events import (
    Event,
    EventAttributes,
    TimerFired,
    TimerStarted,
    WorkflowStarted,
    WorkflowTaskCompleted,
    WorkflowTaskScheduled,
    WorkflowTaskStarted,
)
from chronicle.history.payloads import from_payload, to_payload
from chronicle.protos.v1 import common_pb2, service_pb2
from chronicle.sdk import _workflow_worker
from chronicle.sdk.client import Client
from chronicle.sdk.worker import Worker
from chronicle.sdk.workflow import workflow
from tests.sdk_io.fake_server import start_fake


@workflow
async def wf() -> None: ...


@workflow
async def other() -> None: ...


class FakeInstance:
    """Records activations; acts by workflow id: ``block``, ``boom``, ``close``, else a timer."""

    created: list[FakeInstance] = []

    def __init__(self, definition: Any, info: Any) -> None:
        self.info = info
        self.last_event_id = 0
        self.activations: list[list[int]] = []
        self.closed = False
        FakeInstance.created.append(self)

    def activate(self, events: Sequence[Event]) -> list[Command]:
        assert events[0].id == self.last_event_id + 1
        self.activations.append([e.id for e in events])
        self.last_event_id = events[-1].id
        behaviour = self.info.workflow_id
        if behaviour == "block":
            time.sleep(3)
        if behaviour == "boom":
            raise RuntimeError("boom in workflow code")
        if behaviour == "close":
            return [CompleteWorkflow()]
        return [StartTimer(seq=len(self.activations), duration=timedelta(seconds=1))]

    def close(self) -> None:
        self.closed = True

    def query(self, name: str, args: Sequence[Any]) -> Any:
        return to_payload({"query": name, "activations": len(self.activations)})


NOW = datetime.now(UTC)

ATTRIBUTES: list[EventAttributes] = [
    WorkflowStarted(workflow_type="wf", task_queue="q"),
    WorkflowTaskScheduled(task_queue="q"),
    WorkflowTaskStarted(scheduled_event_id=2),
    WorkflowTaskCompleted(scheduled_event_id=2, started_event_id=3),
    TimerStarted(seq=1, duration=timedelta(seconds=1)),
    TimerFired(started_event_id=5),
    WorkflowTaskScheduled(task_queue="q"),
    WorkflowTaskStarted(scheduled_event_id=7),
]
HISTORY = [Event(id=i, time=NOW, attributes=a) for i, a in enumerate(ATTRIBUTES, start=1)]


def task(
    workflow_id: str, first: int, last: int, *, workflow_type: str = "wf", token: bytes = b"t"
) -> service_pb2.PollWorkflowTaskResponse:
    return service_pb2.PollWorkflowTaskResponse(
        task_token=token,
        workflow_type=workflow_type,
        task_queue="q",
        workflow_execution=common_pb2.WorkflowExecution(
            workflow_id=workflow_id, run_id=f"run-{workflow_id}"
        ),
        events=[wire.event_to_proto(e) for e in HISTORY[first - 1 : last]],
    )


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(_workflow_worker, "WorkflowInstance", FakeInstance)
    FakeInstance.created = []
    server, service, port = await start_fake()

    async def history(request: Any, context: Any) -> Any:
        return service_pb2.GetWorkflowHistoryResponse(
            events=[wire.event_to_proto(e) for e in HISTORY], run_id=request.run_id, closed=True
        )

    service.handlers["GetWorkflowHistory"] = history
    client = await Client.connect(f"127.0.0.1:{port}", retry_timeout=5.0)
    yield service, client
    await client.close()
    await server.stop(None)


async def test_sticky_cache_feeds_the_cached_instance_only_the_new_events(fake: Any) -> None:
    service, client = fake
    async with Worker(client, task_queue="q", workflows=[wf]) as worker:
        await service.workflow_tasks.put(task("a", 1, 3))
        [first] = await service.wait_for("CompleteWorkflowTask")
        await service.workflow_tasks.put(task("a", 4, 8))
        await service.wait_for("CompleteWorkflowTask", 2)
        assert worker._workflow_worker is not None
        assert worker._workflow_worker.cached_runs == ["run-a"]
    [instance] = FakeInstance.created
    assert instance.activations == [[1, 2, 3], [4, 5, 6, 7, 8]]
    assert [c.command_type for c in first.commands] == ["StartTimer"]
    assert service.requests["GetWorkflowHistory"] == []
    assert instance.closed  # evicted at shutdown


async def test_a_cache_miss_replays_the_full_history(fake: Any) -> None:
    service, client = fake
    async with Worker(client, task_queue="q", workflows=[wf]):
        await service.workflow_tasks.put(task("a", 4, 8))
        await service.wait_for("CompleteWorkflowTask")
    [instance] = FakeInstance.created
    assert instance.activations == [[1, 2, 3, 4, 5, 6, 7, 8]]
    assert service.requests["GetWorkflowHistory"][0].run_id == "run-a"


async def test_an_unknown_workflow_type_fails_the_task_naming_the_served_types(fake: Any) -> None:
    service, client = fake
    async with Worker(client, task_queue="q", workflows=[wf, other]):
        await service.workflow_tasks.put(task("a", 1, 3, workflow_type="nope"))
        [failed] = await service.wait_for("FailWorkflowTask")
    assert failed.cause == "unknown_workflow_type"
    assert "'nope'" in failed.failure.message
    assert "other, wf" in failed.failure.message


async def test_an_error_in_workflow_code_fails_the_task_and_evicts(fake: Any) -> None:
    service, client = fake
    async with Worker(client, task_queue="q", workflows=[wf]) as worker:
        await service.workflow_tasks.put(task("boom", 1, 3))
        [failed] = await service.wait_for("FailWorkflowTask")
        assert worker._workflow_worker is not None
        assert worker._workflow_worker.cached_runs == []
    assert failed.cause == "workflow_error"
    assert "boom in workflow code" in failed.failure.message
    assert FakeInstance.created[0].closed


async def test_a_blocked_workflow_fails_the_task_as_a_deadlock_with_its_stack(fake: Any) -> None:
    service, client = fake
    async with Worker(client, task_queue="q", workflows=[wf], deadlock_timeout=0.3):
        await service.workflow_tasks.put(task("block", 1, 3))
        [failed] = await service.wait_for("FailWorkflowTask")
    assert failed.cause == "deadlock"
    assert "time.sleep(3)" in failed.failure.stack
    assert "did not finish within 0.3 s" in failed.failure.message


async def test_a_closed_workflow_is_evicted_after_its_completion(fake: Any) -> None:
    service, client = fake
    async with Worker(client, task_queue="q", workflows=[wf]) as worker:
        await service.workflow_tasks.put(task("close", 1, 3))
        [done] = await service.wait_for("CompleteWorkflowTask")
        assert worker._workflow_worker is not None
        assert worker._workflow_worker.cached_runs == []
    assert [c.command_type for c in done.commands] == ["CompleteWorkflow"]
    assert FakeInstance.created[0].closed


async def test_a_query_task_is_answered_by_the_cached_instance(fake: Any) -> None:
    service, client = fake
    async with Worker(client, task_queue="q", workflows=[wf]):
        await service.workflow_tasks.put(task("a", 1, 3))
        await service.wait_for("CompleteWorkflowTask")
        query = task("a", 1, 0, token=b"q")
        query.query.query_name = "status"
        await service.workflow_tasks.put(query)
        [answer] = await service.wait_for("RespondQueryTask")
    assert answer.task_token == b"q"
    assert from_payload(wire.payload_from_proto(answer.result)) == {
        "query": "status",
        "activations": 1,
    }
