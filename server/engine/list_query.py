"""The ListWorkflows query language: ``field = 'value'`` terms joined by ``AND``.

Fields: ``status``, ``type`` (or ``workflow_type``), ``task_queue``, ``workflow_id``. Values are
single- or double-quoted; a quote inside is doubled. An empty query matches everything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chronicle.history.state import RunStatus
from chronicle.server import errors

FIELDS = {
    "status": "status",
    "type": "workflow_type",
    "workflow_type": "workflow_type",
    "task_queue": "task_queue",
    "workflow_id": "workflow_id",
}

_TERM = re.compile(
    r"""\s*([A-Za-z_][A-Za-z_0-9]*)\s*=\s*(?:'((?:[^']|'')*)'|"((?:[^"]|"")*)")\s*"""
)
_AND = re.compile(r"AND\b\s*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ListFilter:
    """Column → required value; ``impossible`` when two terms contradict each other."""

    status: str | None = None
    workflow_type: str | None = None
    task_queue: str | None = None
    workflow_id: str | None = None
    impossible: bool = False


def parse(query: str) -> ListFilter:
    """Parse a query; ``InvalidArgument`` naming the part that could not be read."""
    values: dict[str, str] = {}
    impossible = False
    position = 0
    text = query.strip()
    while position < len(text):
        match = _TERM.match(text, position)
        if match is None:
            raise errors.InvalidArgument(
                f"cannot parse list query at {text[position : position + 40]!r}: expected "
                "field = 'value'",
                field="query",
            )
        name = match[1].lower()
        column = FIELDS.get(name)
        if column is None:
            raise errors.InvalidArgument(
                f"unknown list query field {match[1]!r} (known: {', '.join(sorted(FIELDS))})",
                field="query",
            )
        value = match[2].replace("''", "'") if match[2] is not None else match[3].replace('""', '"')
        if column == "status" and value not in {s.value for s in RunStatus}:
            raise errors.InvalidArgument(
                f"unknown status {value!r} in list query (known: "
                f"{', '.join(s.value for s in RunStatus)})",
                field="query",
            )
        if column in values and values[column] != value:
            impossible = True
        values[column] = value
        position = match.end()
        if position < len(text):
            joiner = _AND.match(text, position)
            if joiner is None:
                raise errors.InvalidArgument(
                    f"expected AND at {text[position : position + 40]!r} in list query",
                    field="query",
                )
            position = joiner.end()
            if position >= len(text):
                raise errors.InvalidArgument("list query ends with AND", field="query")
    return ListFilter(impossible=impossible, **values)
