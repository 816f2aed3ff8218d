"""Where is a workflow stuck? Every coroutine of a live instance and the line it awaits at.

Answered by the worker as the built-in query ``__stack`` (``handle.stack()``,
``chronicle workflow stack ID``) from the cached instance, or from a replay of the history when
the instance is not cached: the same state either way. For each task of the workflow's loop it
walks the chain of awaiting coroutines (``cr_await``) down to the innermost one and shows the
workflow-code frames (SDK and asyncio frames are left out, like call sites in the history).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import FrameType
from typing import Any

from chronicle.sdk._commands import _SKIPPED_MODULES, _display_path
from chronicle.sdk._info import WorkflowInfo

__all__ = ["STACK_QUERY", "workflow_frames", "workflow_stack"]

STACK_QUERY = "__stack"
"""The built-in query name; user query handlers cannot shadow it."""


def _chain(coroutine: Any) -> tuple[list[FrameType], Any]:
    """The frames of ``coroutine`` and the coroutines it awaits, outermost first, and the
    awaited object at the bottom (a future, usually)."""
    frames: list[FrameType] = []
    current = coroutine
    while current is not None:
        frame = getattr(current, "cr_frame", None) or getattr(current, "gi_frame", None)
        if frame is None:
            break
        frames.append(frame)
        awaited = getattr(current, "cr_await", None) or getattr(current, "gi_yieldfrom", None)
        if awaited is None or not (hasattr(awaited, "cr_frame") or hasattr(awaited, "gi_frame")):
            return frames, awaited
        current = awaited
    return frames, None


def _line(frame: FrameType) -> str:
    module = frame.f_globals.get("__name__", "")
    code = frame.f_code
    text = f"{_display_path(code.co_filename, module)}:{frame.f_lineno} in {code.co_name}"
    import linecache

    source = linecache.getline(code.co_filename, frame.f_lineno).strip()
    return f"{text}: {source}" if source else text


def _user(frame: FrameType) -> bool:
    return not str(frame.f_globals.get("__name__", "")).startswith(_SKIPPED_MODULES)


def _awaiting(obj: Any) -> str:
    if obj is None:
        return "ready to run"
    if isinstance(obj, asyncio.Future) or type(obj).__name__ == "FutureIter":
        return "awaiting a future (a durable operation, signal or condition)"
    return f"awaiting {type(obj).__name__}"


def workflow_frames(
    tasks: Iterable[asyncio.Task[Any]], root: asyncio.Task[Any] | None
) -> list[tuple[str, FrameType]]:
    """Each waiting coroutine (the workflow function first) and its innermost workflow-code
    frame: where to read the workflow's locals."""
    found: list[tuple[str, FrameType]] = []
    for task in sorted(tasks, key=lambda t: (t is not root, t.get_name())):
        frames, _ = _chain(task.get_coro())
        user = [f for f in frames if _user(f)]
        if user:
            found.append(("workflow function" if task is root else task.get_name(), user[-1]))
    return found


def workflow_stack(
    info: WorkflowInfo, tasks: Iterable[asyncio.Task[Any]], root: asyncio.Task[Any] | None
) -> str:
    """A readable dump: one block per coroutine (the workflow function first)."""
    ordered = sorted(tasks, key=lambda t: (t is not root, t.get_name()))
    head = (
        f"workflow {info.workflow_id!r} (run {info.run_id}, type {info.workflow_type}): "
        f"{len(ordered)} coroutine(s)"
    )
    blocks = [head]
    for task in ordered:
        frames, awaited = _chain(task.get_coro())
        user = [f for f in frames if _user(f)] or frames[-1:]
        title = "workflow function" if task is root else task.get_name()
        lines = [f"  {title}:"]
        lines += [f"    {_line(frame)}" for frame in user]
        lines.append(f"    ({_awaiting(awaited)})")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)
