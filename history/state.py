"""``WorkflowState``: what a run's history folds to (``fold.py``).

The server keeps the folded state of every run as a snapshot beside its history and advances it
with ``fold.apply`` as it appends events, so no transition ever refolds a long history; the
invariant ``fold(history) == snapshot`` is tested. The SDK uses the same state to tie answers
(``ActivityCompleted(scheduled_event_id=…)``) back to the code's operations (``seq``).

Activity attempts, heartbeats and last failures are deliberately *not* here: retries write no
events, so they live in the server's ``activities`` table.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

__all__ = [
    "PendingActivity",
    "PendingChild",
    "PendingExternal",
    "PendingTimer",
    "RunStatus",
    "WorkflowState",
    "WorkflowTaskState",
    "evolve",
]

_T = TypeVar("_T")


class RunStatus(StrEnum):
    """A run's status. Every status but RUNNING is final."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    TERMINATED = "terminated"
    CONTINUED_AS_NEW = "continued_as_new"
    TIMED_OUT = "timed_out"


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowTaskState:
    """The run's one outstanding workflow task: scheduled, or started when ``started_event_id``."""

    scheduled_event_id: int
    task_queue: str
    attempt: int = 1
    timeout: timedelta = timedelta(seconds=10)
    started_event_id: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingActivity:
    """An activity scheduled and not yet resolved, keyed by its ``scheduled_event_id``."""

    scheduled_event_id: int
    seq: int
    activity_id: str
    activity_type: str
    task_queue: str
    cancel_requested: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingTimer:
    """A timer started and not yet fired or cancelled, keyed by its ``started_event_id``."""

    started_event_id: int
    seq: int
    fire_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingChild:
    """A child workflow initiated and not yet closed, keyed by its ``initiated_event_id``."""

    initiated_event_id: int
    seq: int
    workflow_id: str
    workflow_type: str
    parent_close_policy: str = "terminate"
    run_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingExternal:
    """A signal or cancel request to another workflow, keyed by its ``initiated_event_id``."""

    initiated_event_id: int
    seq: int
    kind: str
    workflow_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowState:
    """The folded state of one run at ``next_event_id - 1`` events."""

    next_event_id: int = 1
    status: RunStatus = RunStatus.RUNNING
    workflow_type: str = ""
    task_queue: str = ""
    workflow_task_timeout: timedelta = timedelta(seconds=10)
    start_time: datetime | None = None
    close_time: datetime | None = None
    close_event_id: int = 0
    new_run_id: str = ""
    workflow_task: WorkflowTaskState | None = None
    # The WorkflowTaskStarted id of the last *completed* workflow task: the workflow code has
    # seen every event up to it.
    last_completed_started_event_id: int = 0
    # The last event the workflow code must react to (a result, a signal, a cancel request …).
    # When it is newer than last_completed_started_event_id and no workflow task is outstanding,
    # the server schedules one.
    last_workflow_visible_event_id: int = 0
    # Consecutive failed or timed-out attempts of the current workflow task.
    workflow_task_failures: int = 0
    cancel_requested: bool = False
    # Started with a start delay that has not elapsed yet: no workflow task until it has.
    awaiting_start_delay: bool = False
    pending_activities: dict[int, PendingActivity] = field(default_factory=dict)
    pending_timers: dict[int, PendingTimer] = field(default_factory=dict)
    pending_children: dict[int, PendingChild] = field(default_factory=dict)
    pending_externals: dict[int, PendingExternal] = field(default_factory=dict)
    # Accepted and not yet completed updates: update id → UpdateAccepted event id.
    pending_updates: dict[str, int] = field(default_factory=dict)

    @property
    def is_open(self) -> bool:
        """True while the run is RUNNING."""
        return self.status is RunStatus.RUNNING

    @property
    def needs_workflow_task(self) -> bool:
        """True when the run is open, has events its code has not seen, and no task is out."""
        return (
            self.is_open
            and self.workflow_task is None
            and not self.awaiting_start_delay
            and self.last_workflow_visible_event_id > self.last_completed_started_event_id
        )


_SET = object.__setattr__
_LAYOUTS: dict[type[Any], tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]] = {}


def _evolve(obj: _T, **changes: Any) -> _T:
    """A copy of ``obj`` (one of this module's frozen, slotted dataclasses) with ``changes``.

    ``dataclasses.replace`` without its generic work: no field introspection per call and no
    ``__init__`` call, about half its cost. The fold makes two per event, on the server's path
    of every step. Equivalent because these classes do nothing in ``__init__`` but set their
    fields (checked when a class is first evolved: a ``__post_init__``, a hand-written
    ``__init__`` or an ``init=False`` field is refused). Type checkers see
    ``dataclasses.replace`` under this name, so field names and types are still checked.
    """
    cls = type(obj)
    layout = _LAYOUTS.get(cls)
    if layout is None:
        layout = _LAYOUTS[cls] = _layout(cls)
    names, values = layout
    new = object.__new__(cls)
    for name, value in zip(names, values(obj), strict=True):
        _SET(new, name, value)
    for name, value in changes.items():
        _SET(new, name, value)  # an unknown name: AttributeError (slots)
    return new


def _layout(cls: type[Any]) -> tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]:
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in vars(cls):
        raise TypeError(f"evolve: {cls.__name__} is not a frozen, slotted dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"evolve: {cls.__name__} has a __post_init__ that copying would skip")
    code = getattr(cls.__init__, "__code__", None)
    if not params.init or code is None or code.co_filename != "<string>":  # dataclass's own
        raise TypeError(f"evolve: {cls.__name__} has an __init__ of its own")
    if any(not f.init for f in dataclasses.fields(cls)):
        raise TypeError(f"evolve: {cls.__name__} has fields that __init__ does not set")
    names = tuple(f.name for f in dataclasses.fields(cls))
    getter = operator.attrgetter(*names)
    if len(names) == 1:
        return names, lambda obj: (getter(obj),)
    return names, getter


if TYPE_CHECKING:
    from dataclasses import replace as evolve
else:
    evolve = _evolve
