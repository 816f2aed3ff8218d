"""Replay a recorded history against today's workflow code (golden tests, ``chronicle replay``).

``replay(history, workflows)`` re-runs the workflow named by the history's ``WorkflowStarted``
through every completed workflow task and raises ``NondeterminismError`` at the first command
that differs from what the history recorded. The history may be closed or still open.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from chronicle.history import events as ev
from chronicle.sdk._definitions import WorkflowDefinition, workflow_definition
from chronicle.sdk._info import WorkflowInfo
from chronicle.sdk._instance import WorkflowInstance

__all__ = ["replay"]


def _find(workflow_type: str, workflows: Sequence[Callable[..., Any]]) -> WorkflowDefinition:
    definitions = [workflow_definition(fn) for fn in workflows]
    for definition in definitions:
        if definition.name == workflow_type:
            return definition
    known = ", ".join(sorted(d.name for d in definitions)) or "none"
    raise LookupError(
        f"the history is of workflow type {workflow_type!r}, which is not among "
        f"the given workflows ({known})"
    )


def replay(
    history: Sequence[ev.Event],
    workflows: Sequence[Callable[..., Any]],
    *,
    namespace: str = "default",
    workflow_id: str = "replay",
    run_id: str = "replay",
) -> None:
    """Replay ``history`` with the matching ``@workflow`` among ``workflows``.

    Raises ``NondeterminismError`` on divergence, ``WorkflowTaskError`` if the code now fails
    a task the history shows completed, ``LookupError`` if no workflow has the history's type.
    """
    if not history or not isinstance(history[0].attributes, ev.WorkflowStarted):
        raise ValueError("a history starts with its WorkflowStarted event (event 1)")
    started = history[0].attributes
    definition = _find(started.workflow_type, workflows)
    info = WorkflowInfo(
        namespace=namespace,
        workflow_id=workflow_id,
        run_id=run_id,
        workflow_type=definition.name,
        task_queue=started.task_queue,
        attempt=started.attempt,
    )
    instance = WorkflowInstance(definition, info)
    try:
        instance.activate(history)
    finally:
        instance.close()
