"""A workflow's close wakes the result waiters on the same server at its commit, without
waiting for Postgres to deliver the NOTIFY on the listening connection."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from google.protobuf.duration_pb2 import Duration

from chronicle.history import commands
from chronicle.protos.v1 import service_pb2 as pb
from chronicle.server.app import Server
from chronicle.server.store import notify
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
