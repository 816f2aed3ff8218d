"""What a workflow or an activity may know about itself: ``WorkflowInfo`` and ``ActivityInfo``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

__all__ = ["ActivityInfo", "WorkflowInfo"]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowInfo:
    """The run a workflow instance executes (``workflow.info()``)."""

    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    attempt: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityInfo:
    """The activity task being executed (``activity.info()``); ``attempt`` is 1-based.

    ``heartbeat_details`` are the decoded details of the last heartbeat of a previous attempt,
    so a retried activity can resume where it stopped. ``scheduled_time`` is when the workflow
    scheduled the activity, ``started_time`` when this attempt started.
    """

    activity_id: str
    activity_type: str
    attempt: int
    workflow_id: str
    run_id: str
    workflow_type: str
    namespace: str
    task_queue: str
    task_token: bytes
    scheduled_time: datetime | None = None
    started_time: datetime | None = None
    heartbeat_details: tuple[Any, ...] = ()
    start_to_close_timeout: timedelta | None = None
    heartbeat_timeout: timedelta | None = None
    is_local: bool = False
    """True for a local activity (run by the workflow's worker; no task token, no heartbeats)."""
