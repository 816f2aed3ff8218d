"""Timers due after a timer loop's longest sleep are not announced with NOTIFY (every loop would
ignore the notification); the loop finds them when it next reads, and fires them on time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from chronicle.history import commands
from chronicle.protos.v1 import service_pb2 as pb
from chronicle.server.store import notify
from tests.server.conftest import command_protos, event_types
from tests.server.test_fastpath import _started

DELAY = notify.TIMER_LOOP_MAX_SLEEP + 2.0  # past the longest sleep and the margin


def test_only_timers_due_after_the_longest_sleep_and_a_margin_go_unannounced() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    sleep = notify.TIMER_LOOP_MAX_SLEEP
    for due in (1.0, sleep - 0.5, sleep, sleep + 0.5):  # a sleeping loop may not find these
        assert notify.timer_needs_notify(now + timedelta(seconds=due), now), due
    assert not notify.timer_needs_notify(now + timedelta(seconds=10), now)  # a task timeout
    assert not notify.timer_needs_notify(now + timedelta(seconds=DELAY), now)


async def test_an_unannounced_timer_fires_on_time(stub: Any, db: asyncpg.Connection) -> None:
    _, task = await _started(stub, db, "later")
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token,
            identity="w1",
            commands=command_protos(commands.StartTimer(seq=1, duration=timedelta(seconds=DELAY))),
        )
    )
    fired = pb.PollWorkflowTaskResponse()
    for _ in range(4):  # the test server ends long polls after 5 s
        fired = await stub.PollWorkflowTask(
            pb.PollWorkflowTaskRequest(task_queue="q", identity="w1"), timeout=10
        )
        if fired.task_token:
            break
    assert "TimerFired" in event_types(fired.events)
    history = await stub.GetWorkflowHistory(pb.GetWorkflowHistoryRequest(workflow_id="later"))
    times = {e.event_type: e.time.ToDatetime() for e in history.events}
    late = (times["TimerFired"] - times["TimerStarted"]).total_seconds() - DELAY
    assert 0 <= late < 1.0, f"fired {late:.2f} s late: the timer loop did not find it in time"
