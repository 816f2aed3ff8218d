"""Effects of a workflow task on other runs: start children, signal or cancel other workflows.

They run in the completing task's transaction, right after its events, with the source run
still locked (source → target lock order; a child reports back to its parent only through a
timer row, see ``transition._after_close``). Each outcome is appended to the source run as
its resolution event (``ChildWorkflowStarted`` / ``…StartFailed``, ``External…Resolved``).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable

from chronicle.history import events as ev
from chronicle.history.state import RunStatus, WorkflowState
from chronicle.history.values import Failure
from chronicle.server import errors
from chronicle.server.config import ServerConfig
from chronicle.server.engine import current_run, start
from chronicle.server.engine import transition as tr
from chronicle.server.store import sql
from chronicle.server.store.pool import Conn
from chronicle.server.store.rows import RunKey

OUTBOUND = (ev.ChildWorkflowInitiated, ev.ExternalSignalInitiated, ev.ExternalCancelInitiated)


async def apply(conn: Conn, key: RunKey, outcome: tr.Outcome, config: ServerConfig) -> None:
    """Carry out the outbound events in ``outcome`` and append their resolutions to ``key``."""
    if not outcome.state.is_open:
        return
    resolutions: list[ev.EventAttributes] = []
    for event in outcome.events:
        a = event.attributes
        if isinstance(a, ev.ChildWorkflowInitiated):
            resolutions.append(await _start_child(conn, key, event.id, a, config))
        elif isinstance(a, ev.ExternalSignalInitiated):
            failure = await _signal(conn, key, event.id, a)
            resolutions.append(
                ev.ExternalSignalResolved(initiated_event_id=event.id, failure=failure)
            )
        elif isinstance(a, ev.ExternalCancelInitiated):
            failure = await _cancel(conn, key, a)
            resolutions.append(
                ev.ExternalCancelResolved(initiated_event_id=event.id, failure=failure)
            )
    if resolutions:
        await tr.transition(conn, key, lambda ctx: tr.Decision(events=resolutions))


async def _start_child(
    conn: Conn, parent: RunKey, initiated: int, a: ev.ChildWorkflowInitiated, config: ServerConfig
) -> ev.EventAttributes:
    # The id's current run first, then its current row (docs/decisions.md §15): a later
    # signal or cancel of that id in this transaction must not wait for its run while the
    # current row is held.
    current = await current_run.lock(conn, parent.namespace, a.workflow_id)
    if current is not None and current.status == RunStatus.RUNNING.value:
        return ev.ChildWorkflowStartFailed(
            initiated_event_id=initiated,
            failure=Failure(
                message=f"workflow id '{a.workflow_id}' is already running "
                f"(run id {current.run_id})",
                type="WorkflowAlreadyStarted",
            ),
        )
    run_id = str(uuid.uuid4())
    started = ev.WorkflowStarted(
        workflow_type=a.workflow_type,
        task_queue=a.task_queue,
        input=a.input,
        workflow_task_timeout=config.default_workflow_task_timeout,
        execution_timeout=a.execution_timeout,
        run_timeout=a.run_timeout,
        retry_policy=a.retry_policy,  # retried as a top-level start's (next_run.py)
        random_seed=random.getrandbits(63),
        parent=ev.ParentRef(
            namespace=parent.namespace,
            workflow_id=parent.workflow_id,
            run_id=parent.run_id,
            initiated_event_id=initiated,
        ),
        first_run_id=run_id,
    )
    child = RunKey(parent.namespace, a.workflow_id, run_id)
    await start.create_run(
        conn, child, started, [], tr.utcnow(), replace_current=current is not None
    )
    return ev.ChildWorkflowStarted(initiated_event_id=initiated, run_id=run_id)


async def _target(conn: Conn, namespace: str, workflow_id: str, run_id: str) -> RunKey | None:
    if run_id:
        return RunKey(namespace, workflow_id, run_id)
    current = await conn.fetchrow(sql.GET_CURRENT, namespace, workflow_id)
    return None if current is None else RunKey(namespace, workflow_id, current["run_id"])


def _not_found(workflow_id: str) -> Failure:
    return Failure(
        message=f"workflow '{workflow_id}' not found or already closed", type="WorkflowNotFound"
    )


async def _deliver(
    conn: Conn,
    source: RunKey,
    workflow_id: str,
    run_id: str,
    events: Callable[[WorkflowState], list[ev.EventAttributes]],
) -> Failure | None:
    """Append ``events(target state)`` to the open target run; a failure when there is none
    (unknown, closed, or the source itself). A named run that continued as new is followed to
    the run that carries its workflow on (a child's handle names the run it started as)."""
    target = await _target(conn, source.namespace, workflow_id, run_id)
    if target is None or target.run_id == source.run_id:
        return _not_found(workflow_id)

    def callback(ctx: tr.Context) -> tr.Decision:
        if not ctx.state.is_open or ctx.key.run_id == source.run_id:
            raise errors.NotFound(workflow_id)
        return tr.Decision(events=events(ctx.state))

    try:
        await tr.transition_latest(conn, target, callback)
    except errors.NotFound:
        return _not_found(workflow_id)
    return None


async def _signal(
    conn: Conn, source: RunKey, initiated: int, a: ev.ExternalSignalInitiated
) -> Failure | None:
    signal = ev.SignalReceived(
        signal_name=a.signal_name,
        input=a.input,
        identity=f"workflow:{source.workflow_id}",
        request_id=f"{source.run_id}:{initiated}",
    )
    return await _deliver(conn, source, a.workflow_id, a.run_id, lambda state: [signal])


async def _cancel(conn: Conn, source: RunKey, a: ev.ExternalCancelInitiated) -> Failure | None:
    request = ev.WorkflowCancelRequested(
        reason=f"requested by workflow '{source.workflow_id}'",
        identity=f"workflow:{source.workflow_id}",
    )
    return await _deliver(
        conn,
        source,
        a.workflow_id,
        a.run_id,
        lambda state: [] if state.cancel_requested else [request],
    )
