"""Hand-built histories for SDK tests: a tiny stand-in for the server's bookkeeping.

``Sim`` plays the server for one run: it appends workflow-task events, turns the commands a
``WorkflowInstance`` answers with into command-events (the way the server records them), and
feeds the instance only the events it has not seen. Every history it builds is checked with
``chronicle.history.fold`` so a malformed hand-built history fails loudly.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from chronicle.history import commands as cmd
from chronicle.history import events as ev
from chronicle.history.fold import fold
from chronicle.history.payloads import to_payload, to_payloads
from chronicle.history.values import Failure, Payload
from chronicle.sdk._definitions import workflow_definition
from chronicle.sdk._info import WorkflowInfo
from chronicle.sdk._instance import WorkflowInstance

T0 = datetime(2024, 1, 1, tzinfo=UTC)


class History:
    """Events with increasing ids and times (one second apart unless told)."""

    def __init__(self) -> None:
        self.events: list[ev.Event] = []
        self.time = T0

    def add(
        self, attributes: ev.EventAttributes, *, after: timedelta = timedelta(seconds=1)
    ) -> ev.Event:
        self.time += after
        event = ev.Event(id=len(self.events) + 1, time=self.time, attributes=attributes)
        self.events.append(event)
        return event

    def find(self, cls: type[Any], **match: Any) -> ev.Event:
        for event in self.events:
            if isinstance(event.attributes, cls) and all(
                getattr(event.attributes, k) == v for k, v in match.items()
            ):
                return event
        raise LookupError(f"no {cls.__name__} with {match}")


def command_event(history: History, command: cmd.Command) -> ev.EventAttributes:
    """The command-event the server records for ``command``."""
    match command:
        case cmd.ScheduleActivity():
            return ev.ActivityScheduled(
                seq=command.seq,
                activity_id=command.activity_id,
                activity_type=command.activity_type,
                task_queue=command.task_queue or "q",
                input=command.input,
                start_to_close_timeout=command.start_to_close_timeout,
                call_site=command.call_site,
            )
        case cmd.RequestCancelActivity():
            scheduled = history.find(ev.ActivityScheduled, seq=command.seq)
            return ev.ActivityCancelRequested(scheduled_event_id=scheduled.id)
        case cmd.StartTimer():
            return ev.TimerStarted(
                seq=command.seq, duration=command.duration, call_site=command.call_site
            )
        case cmd.CancelTimer():
            started = history.find(ev.TimerStarted, seq=command.seq)
            return ev.TimerCanceled(started_event_id=started.id)
        case cmd.RecordMarker():
            return ev.MarkerRecorded(
                seq=command.seq,
                marker_name=command.marker_name,
                details=command.details,
                call_site=command.call_site,
            )
        case cmd.StartChildWorkflow():
            return ev.ChildWorkflowInitiated(
                seq=command.seq,
                workflow_id=command.workflow_id,
                workflow_type=command.workflow_type,
                task_queue=command.task_queue or "q",
                input=command.input,
                call_site=command.call_site,
            )
        case cmd.RequestCancelExternalWorkflow():
            return ev.ExternalCancelInitiated(seq=command.seq, workflow_id=command.workflow_id)
        case cmd.CompleteUpdate():
            accepted = history.find(ev.UpdateAccepted, update_id=command.update_id)
            return ev.UpdateCompleted(
                update_id=command.update_id,
                accepted_event_id=accepted.id,
                result=command.result,
                failure=command.failure,
            )
        case cmd.CompleteWorkflow():
            return ev.WorkflowCompleted(result=command.result)
        case cmd.FailWorkflow():
            return ev.WorkflowFailed(failure=command.failure)
        case cmd.CancelWorkflow():
            return ev.WorkflowCanceled()
        case cmd.ContinueAsNew():
            return ev.WorkflowContinuedAsNew(
                new_run_id="run-2",
                workflow_type=command.workflow_type,
                task_queue=command.task_queue,
                input=command.input,
            )
    raise NotImplementedError(command)


class Sim:
    """One run of ``fn``: the test plays the server step by step."""

    def __init__(self, fn: Callable[..., Any], *args: Any, seed: int = 42) -> None:
        self.definition = workflow_definition(fn)
        self.info = WorkflowInfo(
            namespace="default",
            workflow_id="wf-1",
            run_id="run-1",
            workflow_type=self.definition.name,
            task_queue="q",
        )
        self.history = History()
        self.history.add(
            ev.WorkflowStarted(
                workflow_type=self.definition.name,
                task_queue="q",
                input=to_payloads(args),
                random_seed=seed,
            )
        )
        self.instance = WorkflowInstance(self.definition, self.info)
        self.fed = 0
        self.started_id = 0
        self.scheduled_id = 0

    @property
    def events(self) -> list[ev.Event]:
        return self.history.events

    def add(self, attributes: ev.EventAttributes, **kw: Any) -> ev.Event:
        return self.history.add(attributes, **kw)

    def start_task(self) -> ev.Event:
        """Append WorkflowTaskScheduled + WorkflowTaskStarted."""
        scheduled = self.add(ev.WorkflowTaskScheduled(task_queue="q"))
        started = self.add(ev.WorkflowTaskStarted(scheduled_event_id=scheduled.id))
        self.scheduled_id, self.started_id = scheduled.id, started.id
        return started

    def feed(self) -> list[cmd.Command]:
        """Give the instance the events it has not seen (must end with the live task)."""
        commands = self.instance.activate(self.events[self.fed :])
        self.fed = len(self.events)
        return commands

    def task(self) -> list[cmd.Command]:
        """Start a workflow task and run it: the live activation's commands."""
        self.start_task()
        return self.feed()

    def complete(self, commands: list[cmd.Command]) -> list[ev.Event]:
        """Record the answer to the started task: WorkflowTaskCompleted + command-events."""
        self.add(
            ev.WorkflowTaskCompleted(
                scheduled_event_id=self.scheduled_id, started_event_id=self.started_id
            )
        )
        return [self.add(command_event(self.history, c)) for c in commands]

    def step(self) -> list[cmd.Command]:
        """Run a task and record its commands."""
        commands = self.task()
        self.complete(commands)
        return commands

    # ------------------------------------------------------------ answers

    def activity_completed(self, seq: int, result: Any) -> ev.Event:
        scheduled = self.history.find(ev.ActivityScheduled, seq=seq)
        return self.add(
            ev.ActivityCompleted(scheduled_event_id=scheduled.id, result=to_payload(result))
        )

    def activity_failed(self, seq: int, failure: Failure) -> ev.Event:
        scheduled = self.history.find(ev.ActivityScheduled, seq=seq)
        return self.add(ev.ActivityFailed(scheduled_event_id=scheduled.id, failure=failure))

    def timer_fired(self, seq: int) -> ev.Event:
        started = self.history.find(ev.TimerStarted, seq=seq)
        return self.add(
            ev.TimerFired(started_event_id=started.id), after=started.attributes.duration
        )

    def signal(self, name: str, *args: Any) -> ev.Event:
        return self.add(ev.SignalReceived(signal_name=name, input=to_payloads(args)))

    def check(self) -> None:
        """The history is valid (folds without error)."""
        fold(self.events)


def result_of(commands: list[cmd.Command]) -> Any:
    """The decoded result of a trailing CompleteWorkflow."""
    import json

    last = commands[-1]
    assert isinstance(last, cmd.CompleteWorkflow), commands
    payload: Payload | None = last.result
    assert payload is not None
    return json.loads(payload.data)
