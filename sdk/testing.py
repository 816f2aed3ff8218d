"""Test helpers that need no server: replay a saved JSON history, build ``ActivityInfo``.

A saved history is the JSON written by ``chronicle workflow history --json``: a list of events
(or an object with an ``"events"`` list) in the form of ``chronicle.history.codec``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from chronicle.history.codec import event_from_dict
from chronicle.history.events import Event
from chronicle.sdk.replay import RecordedRun, replay

__all__ = ["HISTORY_FORMAT", "HISTORY_VERSION", "load_history", "load_run", "replay_json"]


def _document(source: str | Path | dict[str, Any]) -> Any:
    if isinstance(source, dict):
        return source
    text = (
        source
        if isinstance(source, str) and source.lstrip()[:1] in ("[", "{")
        else Path(source).read_text(encoding="utf-8")
    )
    return json.loads(text)


HISTORY_FORMAT = "chronicle-history"
"""The ``format`` field of an exported history (docs/history-format.md)."""

HISTORY_VERSION = 1
"""The export format version this SDK reads and writes."""


def load_history(source: str | Path | dict[str, Any]) -> list[Event]:
    """Events from a JSON history file (a path) or JSON text (starting with ``[`` or ``{``).

    An exported document must name ``"format": "chronicle-history"`` and a version this SDK
    reads; a bare list of events is accepted too. ``ValueError`` says what is wrong.
    """
    data = _document(source)
    if isinstance(data, dict):
        if data.get("format", HISTORY_FORMAT) != HISTORY_FORMAT:
            raise ValueError(
                f"not a Chronicle history: format is {data.get('format')!r}, "
                f"expected {HISTORY_FORMAT!r}"
            )
        if data.get("version", HISTORY_VERSION) != HISTORY_VERSION:
            raise ValueError(
                f"unsupported history format version {data.get('version')!r}; "
                f"this Chronicle reads version {HISTORY_VERSION}"
            )
    items: Any = data.get("events", []) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError("a JSON history is a list of events or an object with an 'events' list")
    return [event_from_dict(item) for item in items]


def replay_json(source: str | Path, workflows: Sequence[Callable[..., Any]], **info: str) -> None:
    """``replay`` a JSON history (path or text) against ``workflows``.

    Errors name the workflow id and run id the document records, unless ``info`` overrides them.
    """
    data = _document(source)
    if isinstance(data, dict):
        for key in ("namespace", "workflow_id", "run_id"):
            if isinstance(data.get(key), str):
                info.setdefault(key, data[key])
    replay(load_history(source), workflows, **info)


def load_run(source: str | Path | dict[str, Any]) -> RecordedRun:
    """A history document (path, JSON text or parsed dict) with the run ids it records."""
    data = _document(source)
    ids: dict[str, str] = {}
    if isinstance(data, dict):
        for key in ("namespace", "workflow_id", "run_id"):
            if isinstance(data.get(key), str) and data[key]:
                ids[key] = data[key]
    if "workflow_id" not in ids and isinstance(source, Path | str) and not _is_text(source):
        ids["workflow_id"] = Path(source).stem
    return RecordedRun(load_history(data), **ids)


def _is_text(source: str | Path) -> bool:
    return isinstance(source, str) and source.lstrip()[:1] in ("[", "{")
