"""A workflow id's current run, locked in the one lock order: run first, current row second.

Every close locks the run's ``executions`` row and then updates the id's
``current_executions`` row (``transition`` → the write's ``close_current``; continue-as-new
and reset then point it at the new run). Whatever else needs both rows takes them in the same
order, through ``lock``: a start that finds a current run (id policies, signal-with-start), a
reset, a child start. Otherwise the two wait for each other until Postgres breaks the cycle
(docs/decisions.md §15).
"""

from __future__ import annotations

from dataclasses import dataclass

from chronicle.server.store import sql
from chronicle.server.store.pool import Conn, StaleRead


@dataclass(frozen=True, slots=True)
class Current:
    """A workflow id's current-execution row, locked (and its run's execution row with it)."""

    run_id: str
    status: str
    start_request_id: str
    first_run_id: str
    """The first run of the current run's chain (``executions.first_run_id``)."""


async def lock(conn: Conn, namespace: str, workflow_id: str) -> Current | None:
    """Lock the execution row of ``workflow_id``'s current run, then its current row, in the
    caller's transaction; None when the id has no current row.

    The run is the one the current row named when the statement began. When another run
    replaced it meanwhile (a continue-as-new, reset or start committed while this waited for
    the old run's row), locking the new run now would wait for an execution row while holding
    the current row: ``StaleRead`` instead, and ``in_transaction`` reruns the transaction,
    which then locks the new run first. The error names the new run (``moved_to``): a commit
    that moved the id on, so the rerun does not use up one of the call's attempts.
    """
    row = await conn.fetchrow(sql.LOCK_CURRENT_RUN, namespace, workflow_id)
    if row is None:
        return None
    locked = row["locked_run_id"]
    if locked is not None and locked != row["run_id"]:
        raise StaleRead(
            f"the current run of workflow '{workflow_id}' changed from {locked} to "
            f"{row['run_id']} while its execution row was being locked",
            moved_to=f"{namespace}/{workflow_id}/{row['run_id']}",
        )
    return Current(row["run_id"], row["status"], row["start_request_id"], row["first_run_id"])
