"""Lost workers: a worker whose session stream broke is treated as dead at once.

A worker holds one ``WorkerSession`` stream open while it runs. When the stream breaks without
the server stopping (the process was killed, the host or the network went away; a worker that
shuts down gracefully first finishes or fails what it started), ``worker_lost`` makes the
timeouts that guard the worker's started tasks fall due now: its activity attempts time out
(start-to-close: retried per their policy) and its workflow tasks time out (rescheduled on the
normal queue). Nothing new is decided here: the timer loop applies the usual timeout
transitions, with their checks against the run's state, so a late answer from a worker that
was not dead after all is rejected as stale, exactly as after a real timeout. Runs and task
rows sticky to the worker are released so their next workflow task goes to anyone at once.
"""

from __future__ import annotations

from chronicle.server import telemetry
from chronicle.server.engine import tasks as rows
from chronicle.server.engine import transition as tr
from chronicle.server.engine.services import Services
from chronicle.server.store import notify, sql
from chronicle.server.store import pool as db
from chronicle.server.store.pool import Conn


async def worker_lost(services: Services, namespace: str, identity: str) -> None:
    """Time out everything worker ``identity`` had started, now (one transaction)."""
    if not identity:
        return
    now = tr.utcnow()

    async def body(conn: Conn) -> tuple[int, int]:
        await conn.execute(sql.UNSTICK_RUNS, namespace, identity)
        row = await conn.fetchrow(
            sql.EXPIRE_WORKER_TASKS, namespace, identity, now, notify.timer_payload(now)
        )
        assert row is not None
        queues = row["queues"] or []
        keys = [notify.task_key(kind, namespace, queue) for kind, queue in queues]
        if keys:
            await conn.execute(sql.NOTIFY_TASKS, keys)
        return int(row["activities"]), int(row["workflow_tasks"])

    activities, workflow_tasks = await db.in_transaction(services.pool, body)
    telemetry.logger(namespace=namespace, identity=identity).info(
        "worker session lost; its tasks time out now",
        activities=activities,
        workflow_tasks=workflow_tasks,
        kinds=(rows.ACT_START_TO_CLOSE, rows.WFT_TIMEOUT),
    )
