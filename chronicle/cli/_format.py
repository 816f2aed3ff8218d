"""Human-readable output of the CLI: tables, event summaries, descriptions."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from chronicle.history import codec
from chronicle.history.events import Event
from chronicle.sdk._descriptions import WorkflowDescription, WorkflowExecution

__all__ = [
    "describe_text",
    "event_details",
    "execution_row",
    "render_value",
    "table",
    "timestamp",
]

_DETAILS_WIDTH = 120
_NOISE = frozenset(
    {
        "call_site",
        "workflow_task_completed_event_id",
        "identity",
        "request_id",
        "random_seed",
        "stack",
        "first_run_id",
    }
)


_TASK_FAILURE_CAUSES = {
    "NondeterminismError": "nondeterminism",
    "DeadlockError": "deadlock",
    "WorkflowNotRegisteredError": "unknown_workflow_type",
}
"""The workflow-task failure cause the SDK reports with each failure type (describe shows it)."""


def timestamp(value: datetime | None) -> str:
    """``2024-05-01 12:00:00.123`` (UTC), or ``-``."""
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain left-aligned text table."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def _base64(text: str) -> bytes:
    """Payload data as exported (URL-safe base64, as the codec writes it) or in the standard
    alphabet, padded or not: ``b64decode`` would silently drop ``-`` and ``_``."""
    text = text.replace("+", "-").replace("/", "_")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _payload_text(value: dict[str, Any]) -> str:
    data = value.get("data", "")
    try:
        raw = _base64(data) if isinstance(data, str) else bytes(data)
    except ValueError:
        return str(data)
    if value.get("encoding") == "json/plain":
        try:
            return json.dumps(json.loads(raw), ensure_ascii=False, separators=(",", ":"))
        except ValueError:
            pass
    return f"<{value.get('encoding')}: {len(raw)} bytes>"


def _is_payload(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"encoding", "data"}


def _render(value: Any) -> str:
    if _is_payload(value):
        return _payload_text(value)
    if isinstance(value, dict):
        if "message" in value and "kind" in value:  # a Failure
            kind = value.get("type") or value.get("kind")
            return f"{kind}: {value.get('message')}"
        return (
            "{"
            + ", ".join(
                f"{k}={_render(v)}"
                for k, v in value.items()
                if k not in _NOISE and v not in (None, "", [], {})
            )
            + "}"
        )
    if isinstance(value, list):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def render_value(value: Any) -> str:
    """An attribute value in JSON form as short text: payloads decoded, failures as
    ``Type: message``, defaults left out of nested objects."""
    return _render(value)


def event_details(event: Event) -> str:
    """The event's interesting attributes as ``key=value, ...`` (payloads shown as JSON)."""
    attributes = codec.to_jsonable(event.attributes)
    parts = [
        f"{key}={_render(value)}"
        for key, value in attributes.items()
        if key not in _NOISE and value not in (None, "", [], {})
    ]
    text = ", ".join(parts)
    return text if len(text) <= _DETAILS_WIDTH else text[: _DETAILS_WIDTH - 1] + "…"


def execution_row(execution: WorkflowExecution) -> list[str]:
    """One ``workflow list`` row."""
    return [
        execution.workflow_id,
        execution.run_id,
        execution.workflow_type,
        str(execution.status),
        timestamp(execution.start_time),
        timestamp(execution.close_time),
    ]


def describe_text(description: WorkflowDescription) -> str:
    """``workflow describe`` as readable ``key: value`` lines."""
    d = description
    lines = [
        f"workflow id:     {d.workflow_id}",
        f"run id:          {d.run_id}",
        f"type:            {d.workflow_type}",
        f"task queue:      {d.task_queue}",
        f"status:          {d.status}",
        f"started:         {timestamp(d.start_time)}",
        f"closed:          {timestamp(d.close_time)}",
        f"history length:  {d.history_length}",
    ]
    if d.parent_workflow_id:
        lines.append(f"parent:          {d.parent_workflow_id} ({d.parent_run_id})")
    if d.memo:
        lines.append(f"memo:            {json.dumps(d.memo, default=str)}")
    if d.reset_from_run_id:
        lines.append(f"reset from:      run {d.reset_from_run_id} at event {d.reset_event_id}")
    if d.reset_to_run_id:
        lines.append(f"reset to:        run {d.reset_to_run_id}")
    if d.last_workflow_task_failure is not None:
        failure = d.last_workflow_task_failure
        first = failure.message.splitlines()[0] if failure.message else ""
        cause = _TASK_FAILURE_CAUSES.get(failure.type, "workflow_error")
        lines.append(
            f"workflow task failing (attempt {d.workflow_task_attempt}, cause {cause}): "
            f"{failure.type or 'error'}: {first}"
        )
    if d.pending_activities:
        lines.append("pending activities:")
        for a in d.pending_activities:
            extra = ""
            if a.last_failure is not None:
                extra = f", last failure: {a.last_failure.type}: {a.last_failure.message}"
            lines.append(
                f"  {a.activity_type} (id {a.activity_id}): {a.state}, attempt {a.attempt}{extra}"
            )
    if d.pending_children:
        lines.append("pending children:")
        lines += [
            f"  {c.workflow_type} {c.workflow_id} ({c.run_id or 'starting'})"
            for c in d.pending_children
        ]
    return "\n".join(lines)
