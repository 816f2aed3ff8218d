"""The deterministic event loop: forbidden operations, ordering, eviction."""

from __future__ import annotations

import asyncio

import pytest

from chronicle.history import commands as cmd
from chronicle.sdk.errors import WorkflowTaskError
from chronicle.sdk.workflow import workflow
from tests.sdk.sdk_histories import Sim, result_of


@workflow
async def does_io() -> None:
    await asyncio.get_running_loop().run_in_executor(None, print)


def test_io_in_workflow_fails_the_task_with_a_clear_message() -> None:
    sim = Sim(does_io)
    with pytest.raises(WorkflowTaskError, match="do their I/O"):
        sim.task()


@workflow
async def ordering() -> list[str]:
    seen: list[str] = []

    async def branch(name: str) -> None:
        seen.append(name + "1")
        await asyncio.sleep(0)
        seen.append(name + "2")

    await asyncio.gather(branch("a"), branch("b"), branch("c"))
    return seen


def test_tasks_run_in_creation_order() -> None:
    assert result_of(Sim(ordering).step()) == ["a1", "b1", "c1", "a2", "b2", "c2"]


@workflow
async def timer_started_and_cancelled_in_one_activation() -> str:
    task = asyncio.create_task(asyncio.sleep(100))
    await asyncio.sleep(0)
    task.cancel()
    return "done"


def test_timer_cancelled_before_it_was_sent_emits_nothing() -> None:
    commands = Sim(timer_started_and_cancelled_in_one_activation).step()
    assert commands == [cmd.CompleteWorkflow(result=commands[0].result)]  # type: ignore[union-attr]


@workflow
async def stubborn() -> None:
    while True:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            continue


def test_close_reports_tasks_that_refuse_to_end(caplog: pytest.LogCaptureFixture) -> None:
    sim = Sim(stubborn)
    sim.task()
    sim.instance.close()
    assert "left 1 task(s) running" in caplog.text


async def test_activation_inside_a_running_asyncio_loop() -> None:
    outer = asyncio.get_running_loop()
    sim = Sim(ordering)
    assert result_of(sim.step()) == ["a1", "b1", "c1", "a2", "b2", "c2"]
    assert asyncio.get_running_loop() is outer
