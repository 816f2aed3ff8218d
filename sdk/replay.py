"""Replay a recorded history against today's workflow code (golden tests, ``chronicle replay``).

``replay(history, workflows)`` re-runs the workflow named by the history's ``WorkflowStarted``
through every completed workflow task and raises ``NondeterminismError`` at the first command
that differs from what the history recorded. The history may be closed or still open; it is
folded first (``chronicle.history.fold``), so one that breaks the format's rules (event 1 not
``WorkflowStarted``, a gap in ids, an answer to nothing, …) raises ``InvalidHistoryError``
before any workflow code runs.

``replay_histories`` does that for many histories and reports each as a ``ReplayResult``
(``replays cleanly`` or its first divergence) instead of raising; ``replay_from_server`` fetches
the histories first, by workflow id or by a ``ListWorkflows`` query (the pre-deploy gate).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from chronicle.history import events as ev
from chronicle.history.fold import fold
from chronicle.sdk._definitions import WorkflowDefinition, workflow_definition
from chronicle.sdk._info import WorkflowInfo
from chronicle.sdk._instance import WorkflowInstance

if TYPE_CHECKING:
    from chronicle.sdk.client import Client

__all__ = [
    "RecordedRun",
    "ReplayResult",
    "replay",
    "replay_folded",
    "replay_from_server",
    "replay_histories",
]


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
    a task the history shows completed, ``LookupError`` if no workflow has the history's type,
    ``InvalidHistoryError`` if the history breaks the format's rules (``ValueError`` if empty).
    """
    if not history:
        raise ValueError("the history is empty: it starts with its WorkflowStarted event (event 1)")
    fold(history)  # InvalidHistoryError names the first event that breaks a rule
    replay_folded(history, workflows, namespace=namespace, workflow_id=workflow_id, run_id=run_id)


def replay_folded(
    history: Sequence[ev.Event],
    workflows: Sequence[Callable[..., Any]],
    *,
    namespace: str = "default",
    workflow_id: str = "replay",
    run_id: str = "replay",
) -> None:
    """``replay`` without its fold: for a history known to obey the format's rules (one the
    server wrote, as a worker's cache miss replays it; ``python -m bench w3`` times this)."""
    started = cast(ev.WorkflowStarted, history[0].attributes)
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


@dataclass(frozen=True, slots=True)
class RecordedRun:
    """A history and the run it belongs to (the ids name the run in errors and reports)."""

    events: Sequence[ev.Event]
    workflow_id: str = "replay"
    run_id: str = "replay"
    namespace: str = "default"


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """The verdict on one run: ``error`` is None when it replays cleanly."""

    workflow_id: str
    run_id: str
    workflow_type: str
    events: int
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        """True when today's code replays the history without a divergence or task failure."""
        return self.error is None

    def __str__(self) -> str:
        where = (
            f"{self.workflow_id} (run {self.run_id}, {self.workflow_type}, {self.events} events)"
        )
        if self.error is None:
            return f"{where}: replays cleanly"
        return f"{where}: {type(self.error).__name__}: {self.error}"


def _replay_one(run: RecordedRun, workflows: Sequence[Callable[..., Any]]) -> ReplayResult:
    first = run.events[0].attributes if run.events else None
    workflow_type = first.workflow_type if isinstance(first, ev.WorkflowStarted) else "?"
    error: Exception | None = None
    try:
        replay(
            run.events,
            workflows,
            namespace=run.namespace,
            workflow_id=run.workflow_id,
            run_id=run.run_id,
        )
    except Exception as exc:  # every failure is the verdict on this run, not a crash
        error = exc
    return ReplayResult(run.workflow_id, run.run_id, workflow_type, len(run.events), error)


def replay_histories(
    runs: Iterable[RecordedRun], workflows: Sequence[Callable[..., Any]]
) -> list[ReplayResult]:
    """Replay each run against ``workflows``; one ``ReplayResult`` per run, in order.

    Never raises for a run that diverges (``NondeterminismError``), fails a task it once
    completed (``WorkflowTaskError``), has a type none of ``workflows`` has (``LookupError``) or
    is not a valid history (``InvalidHistoryError``, ``ValueError``): that is the run's
    ``error``.
    """
    return [_replay_one(run, workflows) for run in runs]


async def replay_from_server(
    client: Client,
    workflows: Sequence[Callable[..., Any]],
    *,
    workflow_id: str | None = None,
    run_id: str | None = None,
    query: str | None = None,
) -> list[ReplayResult]:
    """Fetch histories from the server and replay them against ``workflows``.

    ``workflow_id`` (and optionally ``run_id``) names one run (default: the current one);
    ``query`` (``ListWorkflows`` syntax, e.g. ``"status = 'running' AND type = 'order'"``)
    names every matching run. Exactly one of the two must be given. Replays run in a thread,
    so the caller's event loop keeps serving.
    """
    if (workflow_id is None) == (query is None):
        raise ValueError("give exactly one of workflow_id and query")
    targets: list[tuple[str, str]] = []
    if workflow_id is not None:
        targets.append((workflow_id, run_id or ""))
    else:
        async for execution in client.list(query or ""):
            targets.append((execution.workflow_id, execution.run_id))
    runs: list[RecordedRun] = []
    for target_id, target_run in targets:
        handle = client.get_handle(target_id, run_id=target_run or None)
        events = await handle.history()
        if not target_run:
            target_run = (await handle.describe()).run_id
        runs.append(RecordedRun(events, target_id, target_run, client.namespace))
    return await asyncio.to_thread(replay_histories, runs, workflows)
