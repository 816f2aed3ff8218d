"""The workflow-task grant: what a worker receives for a started workflow task.

Shared by the poll path (``workflow_task.dispatch``) and the eager path (a workflow task started
in the transaction that records an activity result, ``activity_task.complete``).
"""

from __future__ import annotations

from dataclasses import dataclass

from chronicle.server.engine import read
from chronicle.server.engine import transition as tr
from chronicle.server.engine.tokens import WorkflowTaskToken
from chronicle.server.store.pool import Conn
from chronicle.server.store.rows import RunKey, StoredEvent


@dataclass(frozen=True, slots=True)
class WorkflowTaskGrant:
    """A dispatched workflow task, ready to be sent to the worker."""

    token: WorkflowTaskToken
    workflow_type: str
    task_queue: str
    events: list[StoredEvent]
    attempt: int


async def grant(conn: Conn, key: RunKey, outcome: tr.Outcome, *, sticky: bool) -> WorkflowTaskGrant:
    """The grant of the workflow task ``outcome`` started (in the caller's transaction).

    ``sticky``: the worker completed the run's previous task (it may hold the run in its cache),
    so it gets only the events after that task; otherwise the whole history.
    """
    state = outcome.state
    task = state.workflow_task
    assert task is not None
    first = outcome.previous.last_completed_started_event_id + 1 if sticky else 1
    events = await read.fetch_events(conn, key, first, state.next_event_id)
    token = WorkflowTaskToken(key, task.scheduled_event_id, task.started_event_id)
    return WorkflowTaskGrant(token, state.workflow_type, task.task_queue, events, task.attempt)
