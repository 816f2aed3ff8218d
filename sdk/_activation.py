"""New history events → the steps a workflow instance takes: activations and command checks.

An activation boundary is each ``WorkflowTaskStarted``:

- followed (later in the history) by its ``WorkflowTaskCompleted``: a *replayed* activation whose
  commands must equal the command-events recorded right after that completion;
- followed by ``WorkflowTaskFailed``/``TimedOut``: it produced nothing; its jobs carry over;
- the last one, unanswered: the *live* activation, whose commands the worker sends. The next
  feed starts with the answer to it (``Verify``).

Events appended between a ``WorkflowTaskStarted`` and its completion (a signal, a result that
arrived while the worker worked) belong to the *next* activation. Jobs inside an activation are
ordered: WorkflowStarted, then signals and updates, then resolutions (history order), then the
cancellation request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chronicle.history import events as ev
from chronicle.sdk.errors import StaleInstanceError

__all__ = ["Activation", "ActivationReader", "SeqIndex", "Step", "Verify"]

_JOB_ORDER: dict[type[Any], int] = {
    ev.WorkflowStarted: 0,
    ev.SignalReceived: 1,
    ev.UpdateAccepted: 1,
    ev.ActivityCompleted: 2,
    ev.ActivityFailed: 2,
    ev.ActivityTimedOut: 2,
    ev.ActivityCanceled: 2,
    ev.TimerFired: 2,
    ev.ChildWorkflowStarted: 2,
    ev.ChildWorkflowStartFailed: 2,
    ev.ChildWorkflowCompleted: 2,
    ev.ChildWorkflowFailed: 2,
    ev.ExternalSignalResolved: 2,
    ev.ExternalCancelResolved: 2,
    ev.WorkflowCancelRequested: 3,
}
"""Event types that become jobs, with their rank inside an activation."""

_TASK_ANSWERS = (ev.WorkflowTaskCompleted, ev.WorkflowTaskFailed, ev.WorkflowTaskTimedOut)


@dataclass(slots=True)
class Activation:
    """One run of the workflow code to quiescence."""

    started_event_id: int
    time: datetime
    jobs: list[ev.Event]
    replaying: bool
    completed_event_id: int = 0
    """The ``WorkflowTaskCompleted`` of a replayed activation (0 when live)."""
    recorded: list[ev.Event] = field(default_factory=list)
    """Command-events recorded after ``completed_event_id``, to check the commands against."""


@dataclass(slots=True)
class Verify:
    """Check the commands of the previous live activation against what the server recorded."""

    completed_event_id: int
    recorded: list[ev.Event]


Step = Activation | Verify


class SeqIndex:
    """Command-event id → the code's ``seq`` (per kind), to tie answers back to operations."""

    def __init__(self) -> None:
        self.activities: dict[int, int] = {}
        self.timers: dict[int, int] = {}
        self.children: dict[int, int] = {}
        self.externals: dict[int, int] = {}

    def register(self, event: ev.Event) -> None:
        """Remember the seq of a command-event (no-op for other events)."""
        a = event.attributes
        if isinstance(a, ev.ActivityScheduled):
            self.activities[event.id] = a.seq
        elif isinstance(a, ev.TimerStarted):
            self.timers[event.id] = a.seq
        elif isinstance(a, ev.ChildWorkflowInitiated):
            self.children[event.id] = a.seq
        elif isinstance(a, ev.ExternalSignalInitiated | ev.ExternalCancelInitiated):
            self.externals[event.id] = a.seq


def _cancels_at_once(recorded: list[ev.Event], event: ev.Event) -> bool:
    """``event`` is the ``ActivityCanceled`` the server writes right after the
    ``ActivityCancelRequested`` just recorded, for an activity that had not started."""
    a = event.attributes
    if not isinstance(a, ev.ActivityCanceled) or not recorded:
        return False
    last = recorded[-1].attributes
    return isinstance(last, ev.ActivityCancelRequested) and (
        last.scheduled_event_id == a.scheduled_event_id
    )


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


_ACTIVITY_RESOLUTIONS = (
    ev.ActivityCompleted,
    ev.ActivityFailed,
    ev.ActivityTimedOut,
    ev.ActivityCanceled,
)
"""Events that resolve an activity (``TimerFired`` resolves a timer)."""


class ActivationReader:
    """Turns successive feeds of events into steps, carrying jobs across feeds."""

    def __init__(self) -> None:
        self.last_event_id = 0
        self.resolved: dict[tuple[str, int], int] = {}
        """``(kind, timer started / activity scheduled event id)`` → the id of the event that
        resolved it: a cancel command the server dropped because its target had resolved
        first records nothing (``check_commands``)."""
        self._jobs: list[ev.Event] = []
        self._live_started_event_id = 0

    def _note_resolution(self, event: ev.Event) -> None:
        a = event.attributes
        if isinstance(a, ev.TimerFired):
            self.resolved.setdefault(("timer", a.started_event_id), event.id)
        elif isinstance(a, _ACTIVITY_RESOLUTIONS):
            self.resolved.setdefault(("activity", a.scheduled_event_id), event.id)

    def feed(self, events: list[ev.Event]) -> list[Step]:
        """The steps for ``events``, which must continue right after ``last_event_id``.

        ``StaleInstanceError`` if the previous live activation's task failed or timed out (the
        instance ran code whose commands were never recorded).
        """
        answers: dict[int, type[Any]] = {}
        for event in events:
            if isinstance(event.attributes, _TASK_ANSWERS):
                answers[event.attributes.started_event_id] = type(event.attributes)
        steps: list[Step] = []
        open_activations: dict[int, Activation] = {}
        index = 0
        while index < len(events):
            event = events[index]
            if event.id != self.last_event_id + 1:
                raise ValueError(
                    f"events must continue the history: expected event {self.last_event_id + 1}, "
                    f"got event {event.id}"
                )
            self.last_event_id = event.id
            index += 1
            a = event.attributes
            self._note_resolution(event)
            if type(a) in _JOB_ORDER:
                self._jobs.append(event)
            elif isinstance(a, ev.WorkflowTaskStarted):
                answer = answers.get(event.id)
                if answer is ev.WorkflowTaskCompleted or answer is None:
                    jobs = sorted(self._jobs, key=lambda e: _JOB_ORDER[type(e.attributes)])
                    self._jobs = []
                    activation = Activation(
                        started_event_id=event.id,
                        time=_utc(event.time),
                        jobs=jobs,
                        replaying=answer is not None,
                    )
                    steps.append(activation)
                    if answer is None:
                        self._live_started_event_id = event.id
                    else:
                        open_activations[event.id] = activation
            elif isinstance(a, ev.WorkflowTaskCompleted):
                recorded: list[ev.Event] = []
                while index < len(events):
                    following = events[index]
                    if type(following.attributes) in ev.COMMAND_EVENT_TYPES:
                        recorded.append(following)
                    elif _cancels_at_once(recorded, following):
                        # A cancelled activity no worker had started resolves right after its
                        # cancel request, among the task's command-events: an answer (a job),
                        # and the command-events go on after it.
                        self._jobs.append(following)
                        self._note_resolution(following)
                    else:
                        break
                    self.last_event_id = following.id
                    index += 1
                replayed = open_activations.pop(a.started_event_id, None)
                if replayed is not None:
                    replayed.completed_event_id = event.id
                    replayed.recorded = recorded
                elif a.started_event_id == self._live_started_event_id:
                    self._live_started_event_id = 0
                    steps.append(Verify(completed_event_id=event.id, recorded=recorded))
            elif (
                isinstance(a, ev.WorkflowTaskFailed | ev.WorkflowTaskTimedOut)
                and a.started_event_id == self._live_started_event_id
            ):
                raise StaleInstanceError(
                    f"the workflow task started at event {a.started_event_id} "
                    f"{'failed' if isinstance(a, ev.WorkflowTaskFailed) else 'timed out'} "
                    "after this instance answered it: evict the instance and replay"
                )
        return steps
