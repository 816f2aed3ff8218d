"""Guard rails: workflow code that calls the clock, randomness, sleep, files, sockets or threads
is told which replay-safe call to use instead (a warning, or in strict mode a task failure);
library code and code outside workflows are left alone; a blocked loop fails the task."""

from __future__ import annotations

import asyncio
import random
import re
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from chronicle.sdk._guards import NondeterministicCallError, WorkflowDeterminismWarning
from chronicle.sdk._instance import WorkflowInstance
from chronicle.sdk.client import Client
from chronicle.sdk.errors import WorkflowTaskError
from chronicle.sdk.worker import Worker
from chronicle.sdk.workflow import workflow
from chronicle.server.app import Server
from tests.sdk.sdk_histories import Sim, result_of
from tests.sdk_io.helpers import eventually, of_type

FILE = Path(__file__).resolve()


def _line(marker: str) -> int:
    lines = FILE.read_text().splitlines()
    return 1 + next(i for i, text in enumerate(lines) if text.endswith(f"# {marker}"))


def _time() -> None:
    time.time()  # time.time


def _time_ns() -> None:
    time.time_ns()  # time.time_ns


def _sleep() -> None:
    time.sleep(0)  # time.sleep


def _random() -> None:
    random.random()  # random.random


def _choice() -> None:
    random.choice("ab")  # random.choice


def _uuid() -> None:
    uuid.uuid4()  # uuid.uuid4


def _open() -> None:
    with open(FILE, encoding="utf-8") as f:  # open
        f.read(1)


def _socket() -> None:
    socket.socket().close()  # socket


def _thread() -> None:
    threading.Thread(target=lambda: None).start()  # thread


CASES: dict[str, tuple[Callable[[], Any], str, str]] = {
    "time.time": (_time, "time.time()", "workflow.now()"),
    "time.time_ns": (_time_ns, "time.time_ns()", "workflow.now()"),
    "time.sleep": (_sleep, "time.sleep()", "await workflow.sleep"),
    "random.random": (_random, "random.random()", "workflow.random()"),
    "random.choice": (_choice, "random.choice()", "workflow.random()"),
    "uuid.uuid4": (_uuid, "uuid.uuid4()", "workflow.uuid4()"),
    "open": (_open, "open()", "an activity"),
    "socket": (_socket, "socket()", "an activity"),
    "thread": (_thread, "Thread.start()", "asyncio tasks"),
}
CALL: list[Callable[[], Any]] = []


@workflow
async def calls_something() -> str:
    CALL[0]()
    return "done"


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_guarded_call_warns_naming_where_and_the_alternative(name: str) -> None:
    call, shown, alternative = CASES[name]
    CALL[:] = [call]
    with pytest.warns(WorkflowDeterminismWarning) as caught:
        assert result_of(Sim(calls_something).step()) == "done"
    [warning] = [w for w in caught if issubclass(w.category, WorkflowDeterminismWarning)]
    message = str(warning.message)
    assert message.startswith(f"{shown} called from workflow code at {FILE}:{_line(name)}")
    assert "(workflow 'calls_something') is not replay-safe: use " + alternative in message
    assert warning.filename == str(FILE)  # attributed to the workflow code's line
    assert warning.lineno == _line(name)


@workflow
async def uses_safe_calls() -> str:
    workflow.logger.info("logging reads the clock, but inside the logging library")
    stamp = workflow.now().isoformat()
    return f"{stamp} {workflow.uuid4()} {workflow.random().random()}"


def test_safe_calls_and_calls_outside_workflows_are_not_reported() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Sim(uses_safe_calls).step()
        time.time()
        random.random()
        uuid.uuid4()
    assert not [w for w in caught if issubclass(w.category, WorkflowDeterminismWarning)]


def test_strict_mode_fails_the_task_at_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(WorkflowInstance, "guard_mode", "strict")
    CALL[:] = [CASES["uuid.uuid4"][0]]
    with pytest.raises(WorkflowTaskError) as caught:
        Sim(calls_something).step()
    assert isinstance(caught.value.__cause__, NondeterministicCallError)
    assert f"uuid.uuid4() called from workflow code at {FILE}:{_line('uuid.uuid4')}" in str(
        caught.value
    )


@workflow
async def reads_the_wall_clock() -> str:
    return datetime.now().isoformat()  # WALL_CLOCK


async def test_datetime_now_in_a_workflow_is_found_when_the_worker_starts(client: Client) -> None:
    expected = f"datetime.now() in workflow 'reads_the_wall_clock' at {FILE}:{_line('WALL_CLOCK')}"
    with pytest.warns(WorkflowDeterminismWarning, match=re.escape(expected)):
        Worker(client, task_queue="guards", workflows=[reads_the_wall_clock])
    with pytest.raises(NondeterministicCallError, match=re.escape("use workflow.now()")):
        Worker(
            client,
            task_queue="guards",
            workflows=[reads_the_wall_clock],
            determinism_guard="strict",
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Worker(
            client, task_queue="guards", workflows=[reads_the_wall_clock], determinism_guard="off"
        )


@workflow
async def draws_a_number() -> float:
    return random.random()  # DRAW


async def test_a_strict_worker_fails_the_task_not_the_workflow(
    server: Server, client: Client
) -> None:
    async with Worker(
        client, task_queue="guards", workflows=[draws_a_number], determinism_guard="strict"
    ):
        handle = await client.start(draws_a_number, id="strict-1", task_queue="guards")

        async def failing() -> Any:
            return (await handle.describe()).last_workflow_task_failure

        failure = await eventually(failing)
    assert failure.type == "NondeterministicCallError"
    assert f"random.random() called from workflow code at {FILE}:{_line('DRAW')}" in (
        failure.message
    )
    assert (await handle.describe()).status == "running"
    await handle.terminate("test over")


BLOCKED: set[str] = set()


@workflow
async def blocks_past_the_default_timeout() -> str:
    if workflow.info().workflow_id not in BLOCKED:
        BLOCKED.add(workflow.info().workflow_id)
        time.sleep(2.3)  # noqa: ASYNC251 # BLOCKING
    return "unblocked"


async def test_code_blocking_the_loop_over_2s_fails_the_task_with_its_stack(
    server: Server, client: Client
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WorkflowDeterminismWarning)  # the time.sleep warning
        async with Worker(client, task_queue="guards", workflows=[blocks_past_the_default_timeout]):
            handle = await client.start(
                blocks_past_the_default_timeout, id="blocked-1", task_queue="guards"
            )
            async with asyncio.timeout(30):
                assert await handle.result() == "unblocked"  # the retry does not block
    [failed] = of_type(await handle.history(), "WorkflowTaskFailed")
    assert failed.cause == "deadlock"
    assert "did not finish within 2 s" in failed.failure.message
    assert f'{FILE}", line {_line("BLOCKING")}' in failed.failure.stack
