"""A workflow's close wakes the result waiters on the same server at its commit, without
waiting for Postgres to deliver the NOTIFY on the listening connection."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from google.protobuf.duration_pb2 import Duration

from chronicle.history import commands, wire
from chronicle.protos.v1 import service_pb2 as pb
from chronicle.server.app import Server
from chronicle.server.engine import read
from chronicle.server.engine.closes import Closes, RunOutcome
from chronicle.server.store import notify
from chronicle.server.store.rows import RunKey
from tests.server.conftest import command_protos, payload
from tests.server.test_fastpath import _started


async def test_a_result_waiter_on_this_server_wakes_at_the_closing_commit(
    server: Server, stub: Any, db: asyncpg.Connection
) -> None:
    """Without waiting for Postgres to deliver the run's NOTIFY (taken away here)."""
    notifier = server.services.notifier
    listening = notifier._conn
    assert listening is not None
    await listening.remove_listener(notify.RUN_CHANNEL, notifier._on_notification)
    _, task = await _started(stub, db, "waited")
    waiting = asyncio.ensure_future(
        stub.GetWorkflowResult(
            pb.GetWorkflowResultRequest(workflow_id="waited", wait=Duration(seconds=60)),
            timeout=70,
        )
    )
    await asyncio.sleep(0.2)  # the result long poll waits on the server
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(commands.CompleteWorkflow(result=payload(7))),
        )
    )
    result = await asyncio.wait_for(waiting, 5)  # long before the 60 s wait runs out
    assert result.closed


async def test_a_result_waiter_on_this_server_takes_the_outcome_from_the_close(
    server: Server, stub: Any, db: asyncpg.Connection, monkeypatch: Any
) -> None:
    """The waiter reads the run once, before it waits; the close it is woken for answers from
    memory (closes.py), whether the completion's wake or Postgres's NOTIFY comes first."""
    reads: list[object] = []
    run_outcome = read.run_outcome

    async def counted(db: Any, key: Any) -> Any:
        reads.append(key)
        return await run_outcome(db, key)

    monkeypatch.setattr(read, "run_outcome", counted)
    _, task = await _started(stub, db, "remembered")
    waiting = asyncio.ensure_future(
        stub.GetWorkflowResult(
            pb.GetWorkflowResultRequest(workflow_id="remembered", wait=Duration(seconds=60)),
            timeout=70,
        )
    )
    await asyncio.sleep(0.2)
    assert len(reads) == 1  # the look before the wait
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(commands.CompleteWorkflow(result=payload(8))),
        )
    )
    result = await asyncio.wait_for(waiting, 5)
    assert result.closed
    assert result.status == "completed"
    assert wire.payload_from_proto(result.result) == payload(8)
    assert len(reads) == 1


async def test_a_close_that_did_not_happen_sends_the_waiter_to_the_database() -> None:
    closes = Closes()
    key = RunKey("default", "wf", "run")
    assert await closes.outcome(key) is None  # nothing in flight
    with closes.closing(key):
        waiting = asyncio.ensure_future(closes.outcome(key))
        await asyncio.sleep(0)
        assert not waiting.done()  # it waits for the write's end
    assert await waiting is None  # left without publishing (a stale task, unhandled events)
    assert await closes.outcome(key) is None


async def test_a_published_close_answers_its_waiters_and_the_waiters_woken_after_it() -> None:
    closes = Closes()
    key = RunKey("default", "wf", "run")
    done = RunOutcome("completed", None, None)
    with closes.closing(key) as publish:
        waiting = asyncio.ensure_future(closes.outcome(key))
        with closes.closing(key) as second:  # a racing completion of the same run
            second(RunOutcome("failed", None, None))  # answers nobody: the first one does
        publish(done)
        assert await waiting is done
    assert await closes.outcome(key) is done  # the completion's own wake runs waiters later
