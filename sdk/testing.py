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
from chronicle.sdk.replay import replay

__all__ = ["load_history", "replay_json"]


def _document(source: str | Path) -> Any:
    text = (
        source
        if isinstance(source, str) and source.lstrip()[:1] in ("[", "{")
        else Path(source).read_text(encoding="utf-8")
    )
    return json.loads(text)


def load_history(source: str | Path) -> list[Event]:
    """Events from a JSON history file (a path) or JSON text (starting with ``[`` or ``{``)."""
    data = _document(source)
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
