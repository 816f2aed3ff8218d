"""``chronicle workflow history``: a run's events as a readable timeline.

One line per event: id, time, time since the previous event, type, and the attributes a person
debugging the run looks for first (activity name and attempt, timer duration, signal name,
failure message, the call site of a command). Answers name what they answer: an
``ActivityCompleted`` shows the activity's name, a ``TimerFired`` the timer's duration.
Payloads are decoded JSON, shortened unless ``full``; ``full`` also adds every other attribute.

``Timeline`` keeps what it has seen (scheduled activities, started timers, …) so that it can
render one event at a time, which is what ``--follow`` needs.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from chronicle.cli._format import render_value, timestamp
from chronicle.history import codec
from chronicle.history import events as ev
from chronicle.history.values import Failure, Payload

__all__ = ["HEADER", "Timeline", "delta_text"]

_WIDTHS = (5, 23, 9, 24)
_PAYLOAD_WIDTH = 60
_LINE_WIDTH = 160
_HIDDEN = frozenset({"workflow_task_completed_event_id"})


def _row(cells: tuple[str, str, str, str, str]) -> str:
    head = "  ".join(cell.ljust(width) for cell, width in zip(cells, _WIDTHS, strict=False))
    return f"{head}  {cells[4]}".rstrip()


HEADER = _row(("ID", "TIME", "+DELTA", "TYPE", "DETAILS"))
"""The timeline's header line (columns have fixed widths, so lines can be streamed)."""


def delta_text(delta: timedelta | None) -> str:
    """``+4ms``, ``+1.25s``, ``+3m04s``, ``+2h05m``, ``+3d04h``; empty for the first event."""
    if delta is None:
        return ""
    seconds = max(delta.total_seconds(), 0.0)
    if seconds < 1:
        return f"+{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"+{seconds:.2f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"+{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"+{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"+{days}d{hours:02d}h"


def _seconds(duration: timedelta | None) -> str:
    if duration is None:
        return "-"
    value = duration.total_seconds()
    return f"{value:g}s"


class Timeline:
    """Renders events of one run, in order, as timeline lines."""

    def __init__(self, *, full: bool = False) -> None:
        self.full = full
        self._previous: datetime | None = None
        self._activities: dict[int, str] = {}
        self._timers: dict[int, timedelta] = {}
        self._children: dict[int, str] = {}

    def line(self, event: ev.Event) -> str:
        """The timeline line of ``event`` (events must be given in history order)."""
        delta = None if self._previous is None else event.time - self._previous
        self._previous = event.time
        details = self.details(event)
        if not self.full and len(details) > _LINE_WIDTH:
            details = details[: _LINE_WIDTH - 1] + "…"
        return _row((str(event.id), timestamp(event.time), delta_text(delta), event.type, details))

    # ------------------------------------------------------------ details

    def _payload(self, payload: Payload | None) -> str:
        if payload is None:
            return "null"
        text = render_value(codec.to_jsonable(payload))
        if not self.full and len(text) > _PAYLOAD_WIDTH:
            text = text[: _PAYLOAD_WIDTH - 1] + "…"
        return text

    def _payloads(self, payloads: tuple[Payload, ...]) -> str:
        return "(" + ", ".join(self._payload(p) for p in payloads) + ")"

    def _failure(self, failure: Failure | None) -> str:
        if failure is None:
            return "-"
        kind = failure.type or str(failure.kind)
        message = failure.message if self.full else (failure.message.splitlines() or [""])[0]
        text = f"{kind}: {message}"
        if failure.cause is not None:
            text += f" (cause: {self._failure(failure.cause)})"
        return text

    def details(self, event: ev.Event) -> str:
        """The key attributes of ``event``; with ``full``, every other attribute after them."""
        parts, shown = self._key_parts(event)
        if self.full:
            attributes = codec.to_jsonable(event.attributes)
            parts += [
                f"{key}={render_value(value)}"
                for key, value in attributes.items()
                if key not in shown and key not in _HIDDEN and value not in (None, "", [], {})
            ]
        return "  ".join(parts)

    def _key_parts(self, event: ev.Event) -> tuple[list[str], set[str]]:
        a = event.attributes
        site = getattr(a, "call_site", None)
        where = [f"@ {site.file}:{site.line}"] if site is not None else []
        match a:
            case ev.WorkflowStarted():
                parts = [f"{a.workflow_type}{self._payloads(a.input)}", f"queue={a.task_queue}"]
                if a.attempt > 1:
                    parts.append(f"attempt={a.attempt}")
                if a.continued_from_run_id:
                    parts.append(f"continued from {a.continued_from_run_id}")
                return parts, {"workflow_type", "input", "task_queue", "attempt"}
            case ev.WorkflowTaskScheduled():
                return ([f"attempt={a.attempt}"] if a.attempt > 1 else []), {"attempt"}
            case ev.WorkflowTaskStarted() | ev.WorkflowTaskCompleted():
                return ([f"by {a.identity}"] if a.identity else []), {"identity"}
            case ev.WorkflowTaskFailed():
                return [f"cause={a.cause}", self._failure(a.failure)], {"cause", "failure"}
            case ev.ActivityScheduled():
                self._activities[event.id] = a.activity_type
                parts = [f"{a.activity_type}{self._payloads(a.input)}", f"seq={a.seq}", *where]
                return parts, {"activity_type", "input", "seq", "call_site"}
            case ev.ActivityCompleted():
                name = self._activities.get(a.scheduled_event_id, "?")
                parts = [name, f"attempt={a.attempt}", f"result={self._payload(a.result)}"]
                return parts, {"result", "attempt"}
            case ev.ActivityFailed() | ev.ActivityTimedOut():
                name = self._activities.get(a.scheduled_event_id, "?")
                parts = [name, f"attempt={a.attempt}", self._failure(a.failure)]
                if isinstance(a, ev.ActivityTimedOut):
                    parts.insert(2, f"timeout={a.timeout_type}")
                return parts, {"failure", "attempt", "timeout_type"}
            case ev.ActivityCancelRequested() | ev.ActivityCanceled():
                return [self._activities.get(a.scheduled_event_id, "?")], set()
            case ev.TimerStarted():
                self._timers[event.id] = a.duration
                return [f"duration={_seconds(a.duration)}", f"seq={a.seq}", *where], {
                    "duration",
                    "seq",
                    "call_site",
                }
            case ev.TimerFired() | ev.TimerCanceled():
                return [f"duration={_seconds(self._timers.get(a.started_event_id))}"], set()
            case ev.SignalReceived():
                return [f"{a.signal_name}{self._payloads(a.input)}"], {"signal_name", "input"}
            case ev.MarkerRecorded():
                details = ", ".join(f"{k}={self._payload(v)}" for k, v in a.details.items())
                return [f"{a.marker_name}({details})", *where], {
                    "marker_name",
                    "details",
                    "call_site",
                }
            case ev.ChildWorkflowInitiated():
                self._children[event.id] = f"{a.workflow_type} {a.workflow_id}"
                parts = [f"{a.workflow_type}{self._payloads(a.input)}", f"id={a.workflow_id}"]
                return [*parts, *where], {"workflow_type", "input", "workflow_id", "call_site"}
            case ev.ChildWorkflowCompleted():
                child = self._children.get(a.initiated_event_id, "?")
                return [child, f"result={self._payload(a.result)}"], {"result"}
            case ev.ChildWorkflowFailed() | ev.ChildWorkflowStartFailed():
                child = self._children.get(a.initiated_event_id, "?")
                return [child, self._failure(a.failure)], {"failure"}
            case ev.WorkflowCompleted():
                return [f"result={self._payload(a.result)}"], {"result"}
            case ev.WorkflowFailed():
                return [self._failure(a.failure)], {"failure"}
            case ev.WorkflowTerminated() | ev.WorkflowCancelRequested():
                return ([f"reason={a.reason!r}"] if a.reason else []), {"reason"}
            case ev.WorkflowContinuedAsNew():
                return [f"new run {a.new_run_id}{self._payloads(a.input)}"], {"new_run_id", "input"}
        return self._generic(a), set(codec.to_jsonable(a))

    def _generic(self, attributes: Any) -> list[str]:
        values = codec.to_jsonable(attributes)
        return [
            f"{key}={render_value(value)}"
            for key, value in values.items()
            if key not in _HIDDEN and value not in (None, "", [], {})
        ]
