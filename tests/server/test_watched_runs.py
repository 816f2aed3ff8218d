"""A run announces new events (its ``chronicle_run`` NOTIFY) only while somebody watches it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from google.protobuf.duration_pb2 import Duration

from chronicle.history import commands
from chronicle.protos.v1 import service_pb2 as pb
from chronicle.server.engine import watch
from chronicle.server.store import notify, sql
from chronicle.server.store.rows import RunKey
from tests.server.conftest import command_protos, payload_proto, start_request
from tests.server.test_fastpath import _started


@pytest.fixture
async def announced(database_url: str) -> AsyncIterator[asyncio.Queue[str]]:
    """The ``chronicle_run`` payloads Postgres delivers, on a connection of their own."""
    conn = await asyncpg.connect(database_url)
    received: asyncio.Queue[str] = asyncio.Queue()
    await conn.add_listener(notify.RUN_CHANNEL, lambda *args: received.put_nowait(args[3]))
    try:
        yield received
    finally:
        await conn.close()


async def _signal(stub: Any, workflow_id: str, value: int) -> None:
    await stub.SignalWorkflow(
        pb.SignalWorkflowRequest(
            workflow_id=workflow_id, signal_name="s", input=[payload_proto(value)]
        )
    )


async def _run_keys_until_end(received: asyncio.Queue[str]) -> list[str]:
    keys = []
    while (payload := await asyncio.wait_for(received.get(), 10)) != "end":
        keys.append(payload)
    return keys


async def test_events_of_an_unwatched_run_are_not_announced(
    stub: Any, db: asyncpg.Connection, announced: asyncio.Queue[str]
) -> None:
    key, _ = await _started(stub, db, "quiet")
    await _signal(stub, "quiet", 1)  # a transition with an event, nobody watching
    await db.execute(sql.WATCH_RUN, *key.params(), 0.05, 0.0)
    await asyncio.sleep(0.2)
    await _signal(stub, "quiet", 3)  # watched, but the mark has run out
    await db.execute(sql.WATCH_RUN, *key.params(), 30.0, 0.0)
    await _signal(stub, "quiet", 2)
    await db.execute("SELECT pg_notify($1, 'end')", notify.RUN_CHANNEL)
    # Notifications arrive in commit order: all of the run's have come before this one.
    assert await _run_keys_until_end(announced) == [notify.run_key(*key.params())]
    signals = await db.fetchval(
        "SELECT count(*) FROM history_events WHERE run_id = $1 AND event_type = 'SignalReceived'",
        key.run_id,
    )
    assert signals == 3


async def test_a_history_long_poll_marks_the_run_and_wakes_on_its_next_event(
    stub: Any, db: asyncpg.Connection
) -> None:
    key, _ = await _started(stub, db, "followed")
    after = await db.fetchval("SELECT next_event_id FROM executions WHERE run_id = $1", key.run_id)
    polling = _history_poll(stub, "followed", after)
    await _until_watched(db, key)
    await _signal(stub, "followed", 1)
    page = await asyncio.wait_for(polling, 5)  # long before the 60 s wait runs out
    assert [e.event_type for e in page.events] == ["SignalReceived"]


async def test_a_followed_run_is_marked_once_not_at_every_step(
    stub: Any, db: asyncpg.Connection
) -> None:
    """A client following a run long-polls once per new event; the mark it leaves outlasts
    each poll (``watch.SLACK``), so the later polls find it long enough and write nothing."""
    key, _ = await _started(stub, db, "followed-long")
    after = await db.fetchval("SELECT next_event_id FROM executions WHERE run_id = $1", key.run_id)
    marks = []
    for value in range(3):
        polling = _history_poll(stub, "followed-long", after)
        await _until_watched(db, key)
        marks.append(await db.fetchval(_MARK, key.run_id))
        await _signal(stub, "followed-long", value)
        page = await asyncio.wait_for(polling, 5)
        after = page.events[-1].event_id + 1
    assert marks[0] is not None
    assert marks == [marks[0]] * 3  # written by the first poll only


async def test_a_watch_between_a_read_and_its_guarded_write_is_not_missed(
    stub: Any, db: asyncpg.Connection, announced: asyncio.Queue[str]
) -> None:
    """The server remembers the row it wrote last (known rows) and writes on it without a
    read; a watch that came in between changed the row, so that write does nothing, and the
    one made on a fresh read sends the notification."""
    key, task = await _started(stub, db, "raced")  # the dispatch left its row known
    await db.execute(sql.WATCH_RUN, *key.params(), 30.0, 0.0)
    timer = commands.StartTimer(seq=1, duration=timedelta(hours=1))
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token, identity="w1", commands=command_protos(timer)
        )
    )
    # The first notification since the watch: the run does not close here.
    assert await asyncio.wait_for(announced.get(), 10) == notify.run_key(*key.params())
    ids = [r["event_id"] for r in await db.fetch(_EVENT_IDS, key.run_id)]
    assert ids == list(range(1, len(ids) + 1))  # each event written once
    assert ids[-1] == 5  # started, scheduled, started, completed, timer started


async def test_a_closed_run_is_not_marked(stub: Any, db: asyncpg.Connection) -> None:
    key, task = await _started(stub, db, "done")
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(commands.CompleteWorkflow()),
        )
    )
    assert await db.execute(sql.WATCH_RUN, *key.params(), 30.0, 0.0) == "UPDATE 0"


_MARK = "SELECT watched_until FROM executions WHERE run_id = $1"
_EVENT_IDS = "SELECT event_id FROM history_events WHERE run_id = $1 ORDER BY event_id"


def _history_poll(stub: Any, workflow_id: str, after: int) -> asyncio.Future[Any]:
    """A ``GetWorkflowHistory`` long poll (60 s) for the events from ``after``, in flight."""
    request = pb.GetWorkflowHistoryRequest(
        workflow_id=workflow_id, first_event_id=after, wait=Duration(seconds=60)
    )
    return asyncio.ensure_future(stub.GetWorkflowHistory(request, timeout=70))


async def _until_watched(db: asyncpg.Connection, key: RunKey) -> None:
    for _ in range(500):
        if await db.fetchval(
            "SELECT watched_until > now() FROM executions WHERE run_id = $1", key.run_id
        ):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the long poll never marked its run watched")


def test_notification_keys_stay_below_the_payload_limit() -> None:
    """Postgres refuses NOTIFY payloads of 8,000 bytes or more (the sending transaction
    fails). Keys of long identifiers are sent as digests; short ones stay readable."""
    short = notify.run_key("default", "order-1", "r")
    assert short == '["default","order-1","r"]'
    long_id = "\x01" * 5000  # JSON spells each in 6 bytes
    keys = {
        notify.run_key("default", long_id, "r"),
        notify.closed_key("default", long_id, "r"),
        notify.run_key("default", long_id + "x", "r"),
        notify.task_key("workflow", "default", long_id),
    }
    assert len(keys) == 4  # distinct
    for key in keys:
        assert key.startswith("#")
        assert len(key.encode()) <= notify.MAX_KEY_BYTES


async def test_a_long_wait_is_capped_by_the_poll_timeout_and_so_is_the_mark(
    server: Any, stub: Any, db: asyncpg.Connection
) -> None:
    """A history long poll asking to wait for an hour returns empty after the server's
    ``poll_timeout`` (5 s here), as every long poll does, and marks its run watched for no
    longer than that wait and the slack. (Its gRPC deadline, 30 s, would cap it too.)"""
    started = await stub.StartWorkflow(start_request("patient"))  # no worker: nothing happens
    request = pb.GetWorkflowHistoryRequest(
        workflow_id="patient", first_event_id=3, wait=Duration(seconds=3600)
    )
    poll_timeout = server.config.poll_timeout
    began = asyncio.get_running_loop().time()
    page = await stub.GetWorkflowHistory(request, timeout=30)
    assert not page.events
    assert asyncio.get_running_loop().time() - began < poll_timeout + 5
    marked_for = await db.fetchval(
        "SELECT extract(epoch FROM watched_until - now()) FROM executions WHERE run_id = $1",
        started.run_id,
    )
    assert marked_for <= watch.SLACK + watch.MARGIN + 1
