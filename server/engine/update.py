"""UpdateWorkflow: validate on a worker, record the acceptance, wait for the handler's outcome.

1. An update id already recorded in the run skips to step 4: updates are idempotent by
   ``update_id`` (the first call's name and arguments win; a repeat just gets the outcome).
2. Validation is a read-only question to the workflow code, routed to a polling worker like a
   query (handler registered, arguments fit its signature, validator accepts). A rejection is
   the answer, and nothing is written.
3. Acceptance is one transition appending ``UpdateAccepted``; the generic rule then makes a
   workflow task due, in which the handler runs. Under the run's lock it re-checks that the run
   is open and the id new, so two concurrent calls with one id record it once.
4. The outcome: long-poll the run's notifications until ``UpdateCompleted`` for the id is in the
   history (result or failure), the run closed without it (a failure), or ``wait`` ran out
   (``completed=False``: the caller asks again with the same id). Since the outcome is read from
   the history, a caller that lost its connection, or a server restart, loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from chronicle.history import events as ev
from chronicle.history.state import RunStatus
from chronicle.history.values import Failure, FailureKind, Payload
from chronicle.server import errors, telemetry
from chronicle.server.engine import query, read, watch
from chronicle.server.engine import transition as tr
from chronicle.server.engine.services import Services
from chronicle.server.store import pool as db
from chronicle.server.store import sql
from chronicle.server.store.pool import Conn, Pool
from chronicle.server.store.rows import RunKey, StoredEvent


@dataclass(frozen=True, slots=True)
class UpdateOutcome:
    """What UpdateWorkflow answers: the outcome once ``completed``, and the run it targets."""

    run_id: str
    completed: bool
    result: Payload | None = None
    failure: Failure | None = None


async def _recorded(db_: Conn | Pool, key: RunKey, update_id: str) -> list[ev.Event]:
    """The run's ``UpdateAccepted`` / ``UpdateCompleted`` events of ``update_id``."""
    rows = await db_.fetch(sql.UPDATE_EVENTS, *key.params(), update_id)
    return [StoredEvent.from_record(row).decode() for row in rows]


async def update(
    services: Services,
    namespace: str,
    workflow_id: str,
    run_id: str,
    *,
    name: str,
    args: tuple[Payload, ...],
    update_id: str,
    identity: str,
    validate_timeout: float,
    wait: float,
    first_run_id: str = "",
) -> UpdateOutcome:
    """Run update ``name`` of the run (see the module docstring); ``first_run_id``: only of a
    run of the chain that run started (``read.resolve_run``)."""
    if not name:
        raise errors.InvalidArgument("update_name is required", field="update_name")
    if not update_id:
        raise errors.InvalidArgument("update_id is required", field="update_id")
    pool = services.pool
    key = await read.resolve_run(pool, namespace, workflow_id, run_id, first_run_id)
    if not await _recorded(pool, key, update_id):
        row = await pool.fetchrow(sql.GET_EXECUTION_STATUS, *key.params())
        if row is None:
            raise read.not_found(workflow_id, run_id)
        if row["status"] != RunStatus.RUNNING.value:
            if await _recorded(pool, key, update_id):  # recorded (and run) just before it closed
                return await _outcome(services, key, update_id, wait)
            ended = "" if row["new_run_id"] else first_run_id  # else: it went on meanwhile
            raise read.closed_run(workflow_id, key.run_id, row["status"], ended)
        _, failure = await query.ask_worker(
            services,
            namespace,
            workflow_id,
            key.run_id,
            name=name,
            args=args,
            timeout=validate_timeout,
            validate_update=True,
        )
        if failure is not None:
            if await _recorded(pool, key, update_id):
                # Another call with this id was accepted while this one was validated (against
                # the state after it): the id's outcome is that call's, not this rejection.
                return await _outcome(services, key, update_id, wait)
            telemetry.run_logger(*key.params()).info(
                "update rejected", update=name, update_id=update_id, error=failure.message
            )
            return UpdateOutcome(key.run_id, True, failure=failure)
        await _accept(services, key, name, args, update_id, identity, first_run_id)
    return await _outcome(services, key, update_id, wait)


async def _accept(
    services: Services,
    key: RunKey,
    name: str,
    args: tuple[Payload, ...],
    update_id: str,
    identity: str,
    first_run_id: str,
) -> None:
    """Append ``UpdateAccepted`` once (a no-op when the id is already recorded)."""

    async def body(conn: Conn) -> None:
        await conn.execute(sql.LOCK_EXECUTION, *key.params())  # serialise duplicates
        if await _recorded(conn, key, update_id):
            return

        def callback(ctx: tr.Context) -> tr.Decision:
            if not ctx.state.is_open:
                ended = "" if ctx.state.new_run_id else first_run_id
                raise read.closed_run(key.workflow_id, key.run_id, ctx.state.status.value, ended)
            accepted = ev.UpdateAccepted(
                update_id=update_id, update_name=name, input=args, identity=identity
            )
            return tr.Decision(events=[accepted])

        await tr.transition(conn, key, callback)

    await db.in_transaction(services.pool, body)
    telemetry.run_logger(*key.params()).info("update accepted", update=name, update_id=update_id)


async def _outcome(services: Services, key: RunKey, update_id: str, wait: float) -> UpdateOutcome:
    pool = services.pool

    async def attempt() -> UpdateOutcome | None:
        status = await pool.fetchrow(sql.GET_EXECUTION_STATUS, *key.params())
        for event in await _recorded(pool, key, update_id):
            a = event.attributes
            if isinstance(a, ev.UpdateCompleted):
                return UpdateOutcome(key.run_id, True, result=a.result, failure=a.failure)
        if status is not None and status["status"] != RunStatus.RUNNING.value:
            failure = Failure(
                message=(
                    f"workflow '{key.workflow_id}' (run {key.run_id}) closed "
                    f"({status['status']}) before update '{update_id}' completed"
                ),
                type="UpdateNotCompleted",
                kind=FailureKind.SERVER,
            )
            return UpdateOutcome(key.run_id, True, failure=failure)
        return None

    found = await watch.long_poll_run(services, key, attempt, wait)
    return found if found is not None else UpdateOutcome(key.run_id, False)
