"""Client-side run changes: signal, request cancellation, terminate."""

from __future__ import annotations

from chronicle.history import events as ev
from chronicle.history.values import Payload
from chronicle.server import errors, telemetry
from chronicle.server.engine import read
from chronicle.server.engine import transition as tr
from chronicle.server.engine.services import Services
from chronicle.server.store import pool as db
from chronicle.server.store import sql
from chronicle.server.store.pool import Conn
from chronicle.server.store.rows import RunKey


async def _apply(
    services: Services,
    namespace: str,
    workflow_id: str,
    run_id: str,
    make: tr.Callback,
    *,
    request_id: str = "",
    seen: str = "",
    first_run_id: str = "",
) -> None:
    """``make``'s change on the open run ``run_id``, or on the workflow's current run followed
    along its chain (docs/decisions.md §14); ``first_run_id``: only on a run of the chain that
    run started (§22), checked on the run the chain is followed from: the chain never changes
    along it, and its last run is closed before another chain may take the id. ``seen``: the
    statement that finds ``request_id`` already recorded on the chain (``sql.SIGNAL_SEEN``,
    ``sql.CANCEL_SEEN``): a retried request is then applied to no run."""

    async def body(conn: Conn) -> None:
        async def unseen(key: RunKey) -> bool:
            if request_id and seen:
                await conn.execute(sql.LOCK_EXECUTION, *key.params())  # serialise duplicates
                if await conn.fetchval(seen, *key.params(), request_id):
                    return False  # a retried request: already recorded once
            return True

        key = await read.resolve_run(conn, namespace, workflow_id, run_id, first_run_id)
        chain_end = "" if run_id else first_run_id  # a closed run here ends its chain

        def callback(ctx: tr.Context) -> tr.Decision:
            if not ctx.state.is_open:
                raise read.closed_run(
                    workflow_id, ctx.key.run_id, ctx.state.status.value, chain_end
                )
            return make(ctx)

        try:
            if run_id:  # that very run
                if await unseen(key):
                    await tr.transition(conn, key, callback)
            else:  # the workflow's current run, also if it continues as new meanwhile
                await tr.transition_latest(conn, key, callback, visit=unseen)
        except errors.NotFound as exc:
            if "not found:" in str(exc):
                raise
            raise read.not_found(workflow_id, run_id) from None

    await db.in_transaction(services.pool, body)


async def signal(
    services: Services,
    namespace: str,
    workflow_id: str,
    run_id: str,
    *,
    signal_name: str,
    input: tuple[Payload, ...],
    identity: str,
    request_id: str,
    first_run_id: str = "",
) -> None:
    """Append ``SignalReceived`` to an open run (once per non-empty ``request_id``)."""
    if not signal_name:
        raise errors.InvalidArgument("signal_name is required", field="signal_name")

    def make(ctx: tr.Context) -> tr.Decision:
        return tr.Decision(
            events=[
                ev.SignalReceived(
                    signal_name=signal_name, input=input, identity=identity, request_id=request_id
                )
            ]
        )

    await _apply(
        services,
        namespace,
        workflow_id,
        run_id,
        make,
        request_id=request_id,
        seen=sql.SIGNAL_SEEN,
        first_run_id=first_run_id,
    )


async def request_cancel(
    services: Services,
    namespace: str,
    workflow_id: str,
    run_id: str,
    *,
    reason: str,
    identity: str,
    request_id: str,
    first_run_id: str = "",
) -> None:
    """Append ``WorkflowCancelRequested`` (once: a repeated request changes nothing, nor does
    a retry of one recorded on an earlier run of the chain)."""

    def make(ctx: tr.Context) -> tr.Decision:
        if ctx.state.cancel_requested:
            return tr.Decision()
        return tr.Decision(
            events=[
                ev.WorkflowCancelRequested(reason=reason, identity=identity, request_id=request_id)
            ]
        )

    await _apply(
        services,
        namespace,
        workflow_id,
        run_id,
        make,
        request_id=request_id,
        seen=sql.CANCEL_SEEN,
        first_run_id=first_run_id,
    )


async def terminate(
    services: Services,
    namespace: str,
    workflow_id: str,
    run_id: str,
    *,
    reason: str,
    identity: str,
    first_run_id: str = "",
) -> None:
    """Close the run as terminated, without running workflow code."""

    def make(ctx: tr.Context) -> tr.Decision:
        return tr.Decision(events=[ev.WorkflowTerminated(reason=reason, identity=identity)])

    await _apply(services, namespace, workflow_id, run_id, make, first_run_id=first_run_id)
    telemetry.logger(namespace=namespace, workflow_id=workflow_id).info(
        "workflow terminated", reason=reason
    )
