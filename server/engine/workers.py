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
Queries (and update validations) handed to the worker by this process and not answered yet
go back for the next poller (``QueryRouter.release_worker``): to this process's lists, or,
those its pollers claimed from ``pending_queries`` (asked on any replica), claimable again;
an answer from the worker, if it comes after all, still counts while the query waits.

An RPC of the worker that was in flight when its stream broke (a workflow-task completion with
eager starts, an activity completion with an eager workflow task, a poll) can commit tasks for
it just after that first pass. So the pass runs again ``ServerConfig.lost_worker_settle`` later,
unless the worker has opened a new session meanwhile (it was only cut off, and what it started
since is its own).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from chronicle.server import telemetry
from chronicle.server.engine import tasks as rows
from chronicle.server.engine import transition as tr
from chronicle.server.engine.services import Services
from chronicle.server.store import notify, sql
from chronicle.server.store import pool as db
from chronicle.server.store.pool import Conn


async def worker_lost(
    services: Services, namespace: str, identity: str, reconnected: Callable[[], bool]
) -> None:
    """Time out everything worker ``identity`` had started, now; and once more after the
    settle time (for tasks its in-flight RPCs committed) unless ``reconnected()``."""
    if not identity:
        return
    await _release_queries(services, namespace, identity)
    await _expire(services, namespace, identity)
    await asyncio.sleep(services.config.lost_worker_settle)
    if reconnected() or services.notifier.is_stopping():
        return
    await _release_queries(services, namespace, identity)
    await _expire(services, namespace, identity)


async def _release_queries(services: Services, namespace: str, identity: str) -> None:
    """Give back the queries handed to the worker by this process (a poll in flight may have
    taken one): those in this process's lists, and those its pollers claimed from other
    replicas (``pending_queries``)."""
    try:
        released = await services.queries.release_worker(
            namespace, identity, "its session ended before it answered"
        )
    except Exception as exc:
        telemetry.logger(namespace=namespace, identity=identity).warning(
            "could not give back the queries claimed for a lost worker; they wait for "
            "their deadline",
            error=repr(exc),
        )
        return
    if released:
        telemetry.logger(namespace=namespace, identity=identity).info(
            "worker session lost; the queries handed to it go to the next poller",
            queries=released,
        )


async def _expire(services: Services, namespace: str, identity: str) -> None:
    """One pass: time out the worker's started tasks now and release what is sticky to it."""
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
