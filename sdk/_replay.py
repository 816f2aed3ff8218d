"""The nondeterminism check: emitted commands against the command-events a history recorded.

Commands and command-events are paired in order, kind by kind, by identity: activity type and
seq, timer seq, marker name and seq, child type and seq, … (not by arguments or durations, so
that changing an input or a timeout is not a nondeterminism). A local activity's marker must
also name the same activity type (``details["activity_type"]``; a marker without it matches
any type). A recorded patch marker that the code no longer asks for is skipped: removing a
``patched()`` call is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any, NoReturn

from chronicle.history import commands as cmd
from chronicle.history import events as ev
from chronicle.sdk._activation import SeqIndex
from chronicle.sdk._commands import Emitted
from chronicle.sdk._info import WorkflowInfo
from chronicle.sdk._local import LOCAL_ACTIVITY_MARKER, local_activity_type
from chronicle.sdk.errors import NondeterminismError

__all__ = [
    "PATCH_MARKER",
    "check_commands",
    "command_identity",
    "event_identity",
    "raise_mismatch",
]

PATCH_MARKER = "patch"
"""``marker_name`` of the markers that ``workflow.patched()`` records."""

_Identity = tuple[Any, ...]


def command_identity(command: cmd.Command) -> _Identity:
    """What must match between a command and its recorded event."""
    match command:
        case cmd.ScheduleActivity():
            return ("activity", command.activity_type, command.seq)
        case cmd.RequestCancelActivity():
            return ("cancel activity", command.seq)
        case cmd.StartTimer():
            return ("timer", command.seq)
        case cmd.CancelTimer():
            return ("cancel timer", command.seq)
        case cmd.RecordMarker():
            return ("marker", command.marker_name, command.seq)
        case cmd.StartChildWorkflow():
            return ("child", command.workflow_type, command.seq)
        case cmd.SignalExternalWorkflow():
            return ("signal external", command.signal_name, command.seq)
        case cmd.RequestCancelExternalWorkflow():
            return ("cancel external", command.seq)
        case cmd.CompleteUpdate():
            return ("update", command.update_id)
        case cmd.CompleteWorkflow():
            return ("complete",)
        case cmd.FailWorkflow():
            return ("fail",)
        case cmd.CancelWorkflow():
            return ("cancel",)
        case cmd.ContinueAsNew():
            return ("continue as new",)
    raise TypeError(f"unknown command {command!r}")  # pragma: no cover


def event_identity(event: ev.Event, index: SeqIndex) -> _Identity:
    """What must match between a recorded command-event and the command that made it."""
    a = event.attributes
    match a:
        case ev.ActivityScheduled():
            return ("activity", a.activity_type, a.seq)
        case ev.ActivityCancelRequested():
            return ("cancel activity", index.activities.get(a.scheduled_event_id))
        case ev.TimerStarted():
            return ("timer", a.seq)
        case ev.TimerCanceled():
            return ("cancel timer", index.timers.get(a.started_event_id))
        case ev.MarkerRecorded():
            return ("marker", a.marker_name, a.seq)
        case ev.ChildWorkflowInitiated():
            return ("child", a.workflow_type, a.seq)
        case ev.ExternalSignalInitiated():
            return ("signal external", a.signal_name, a.seq)
        case ev.ExternalCancelInitiated():
            return ("cancel external", a.seq)
        case ev.UpdateCompleted():
            return ("update", a.update_id)
        case ev.WorkflowCompleted():
            return ("complete",)
        case ev.WorkflowFailed():
            return ("fail",)
        case ev.WorkflowCanceled():
            return ("cancel",)
        case ev.WorkflowContinuedAsNew():
            return ("continue as new",)
    return ("event", event.type)


def _matches(command: cmd.Command, event: ev.Event, index: SeqIndex) -> bool:
    """Whether ``event`` records ``command``: same identity and, for a local activity's marker,
    the same activity type unless the recorded marker does not say."""
    if command_identity(command) != event_identity(event, index):
        return False
    a = event.attributes
    if not (
        isinstance(command, cmd.RecordMarker)
        and isinstance(a, ev.MarkerRecorded)
        and command.marker_name == LOCAL_ACTIVITY_MARKER
    ):
        return True
    recorded = local_activity_type(a.details)
    return recorded is None or recorded == local_activity_type(command.details)


_SHOWN = (
    "activity_type",
    "workflow_type",
    "marker_name",
    "signal_name",
    "update_id",
    "seq",
    "workflow_id",
)


def _describe(value: object) -> str:
    shown = {f.name: getattr(value, f.name) for f in fields(value)}  # type: ignore[arg-type]
    if isinstance(value, cmd.RecordMarker | ev.MarkerRecorded):
        activity_type = local_activity_type(value.details)
        if value.marker_name == LOCAL_ACTIVITY_MARKER and activity_type is not None:
            shown["activity_type"] = activity_type
    text = ", ".join(f"{n}={shown[n]!r}" for n in _SHOWN if n in shown)
    return f"{type(value).__name__}({text})"


def _site(value: object) -> str:
    site = getattr(value, "call_site", None)
    return f" at {site}" if site is not None else " (call site unknown)"


def check_commands(
    emitted: Sequence[Emitted],
    recorded: Sequence[ev.Event],
    index: SeqIndex,
    info: WorkflowInfo,
    completed_event_id: int,
    resolved: Mapping[tuple[str, int], int] | None = None,
    *,
    prefix: bool = False,
) -> None:
    """Raise ``NondeterminismError`` unless ``emitted`` matches ``recorded`` (see module doc).

    ``resolved`` (``ActivationReader.resolved``): when a timer or activity resolved before the
    task completed, the server records nothing for the task's cancel of it, so such a cancel
    command matches no event. ``prefix``: ``emitted`` are the first commands of an activation
    that has not finished; recorded events after them are not checked."""
    i = j = 0
    while i < len(emitted) or (j < len(recorded) and not prefix):
        command = emitted[i] if i < len(emitted) else None
        event = recorded[j] if j < len(recorded) else None
        if command is not None and event is not None and _matches(command.command, event, index):
            i += 1
            j += 1
            continue
        if (
            event is not None
            and isinstance(event.attributes, ev.MarkerRecorded)
            and event.attributes.marker_name == PATCH_MARKER
        ):
            j += 1  # a patch the code no longer checks
            continue
        if command is not None and _dropped_cancel(
            command.command, index, resolved or {}, completed_event_id
        ):
            i += 1  # its target resolved first: the server recorded nothing for it
            continue
        raise_mismatch(command, event, info, completed_event_id)


def _dropped_cancel(
    command: cmd.Command,
    index: SeqIndex,
    resolved: Mapping[tuple[str, int], int],
    completed_event_id: int,
) -> bool:
    """Whether ``command`` cancels a timer or activity that resolved before the task
    completed (the server drops such a cancel: there is nothing left to cancel)."""
    if isinstance(command, cmd.CancelTimer):
        kind, seqs = "timer", index.timers
    elif isinstance(command, cmd.RequestCancelActivity):
        kind, seqs = "activity", index.activities
    else:
        return False
    for target, seq in seqs.items():
        if seq == command.seq:
            return resolved.get((kind, target), completed_event_id) < completed_event_id
    return False


def raise_mismatch(
    command: Emitted | None, event: ev.Event | None, info: WorkflowInfo, completed_event_id: int
) -> NoReturn:
    """Raise the ``NondeterminismError`` for a ``command`` that does not match ``event`` (either
    may be None: nothing was emitted or nothing more was recorded)."""
    where = f"workflow {info.workflow_id!r} (run {info.run_id}, type {info.workflow_type})"
    if event is not None:
        recorded = f"{_describe(event.attributes)} as event {event.id}{_site(event.attributes)}"
        event_id = event.id
    else:
        recorded = f"nothing more after the workflow task completed at event {completed_event_id}"
        event_id = completed_event_id
    if command is not None:
        site = f" at {command.call_site}" if command.call_site else " (call site unknown)"
        attempted = f"{_describe(command.command)}{site}"
    else:
        attempted = "nothing (the code no longer issues this command)"
    raise NondeterminismError(
        f"{where} is nondeterministic at event {event_id}: the history recorded {recorded}, "
        f"but the code attempted {attempted}",
        workflow_id=info.workflow_id,
        run_id=info.run_id,
        event_id=event_id,
        recorded=recorded,
        attempted=attempted,
    )
