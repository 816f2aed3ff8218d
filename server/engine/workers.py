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

A worker that gave this server up (it froze, or the path to it broke) and opened a newer session
on another replica is alive: when this server sees the old session end, possibly long after,
neither pass times anything out (``worker_sessions.moved_to``, checked in each pass's
transaction); the queries this process handed it still go back, since only this process can
give them back. Its tasks are the newer session's server's to time out if that one breaks.
Among them may be a task whose poll answer died with the old connection: that one waits for its
own timeout (docs/decisions.md §8).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from chronicle.server import telemetry
from chronicle.server.engine import tasks as rows
from chronicle.server.engine import transition as tr
from chronicle.server.engine import worker_sessions
from chronicle.server.engine.services import Services
from chronicle.server.engine.worker_sessions import WorkerSession
from chronicle.server.store import notify, sql
from chronicle.server.store import pool as db
from chronicle.server.store.pool import Conn


async def session_ended(
    services: Services, session: WorkerSession, *, lost: bool, reconnected: Callable[[], bool]
) -> None:
    """A session ended on this server (not by its stop): delete its row, then, when its stream
    broke (``lost``), treat its worker as lost (``worker_lost``)."""
    await worker_sessions.record_close(services, session)
    if lost:
        await worker_lost(services, session, reconnected)


async def worker_lost(
    services: Services, session: WorkerSession, reconnected: Callable[[], bool]
) -> None:
    """Time out everything the session's worker had started, now; and once more after the
    settle time (for tasks its in-flight RPCs committed) unless ``reconnected()`` (a session
    of it open on this server). Neither pass times out anything while a newer session of the
    worker is open on any replica."""
    namespace, identity = session.namespace, session.identity
    if not identity:
        return
    await _release_queries(services, namespace, identity)
    await _expire(services, session)
    await asyncio.sleep(services.config.lost_worker_settle)
    if reconnected() or services.notifier.is_stopping():
        return
    await _release_queries(services, namespace, identity)
    await _expire(services, session)


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


async def _expire(services: Services, session: WorkerSession) -> None:
    """One pass: time out the worker's started tasks now and release what is sticky to it,
    unless a newer session of the worker is open (on any replica)."""
    namespace, identity = session.namespace, session.identity
    now = tr.utcnow()

    async def body(conn: Conn) -> tuple[int, int] | str:
        moved = await worker_sessions.moved_to(conn, session)
        if moved is not None:
            return moved
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

    outcome = await db.in_transaction(services.pool, body)
    log = telemetry.logger(namespace=namespace, identity=identity)
    if isinstance(outcome, str):
        log.info(
            "worker session ended, but the worker holds a newer session; its tasks stay",
            session_id=session.session_id,
            newer_session_server=outcome,
        )
        return
    activities, workflow_tasks = outcome
    log.info(
        "worker session lost; its tasks time out now",
        session_id=session.session_id,
        activities=activities,
        workflow_tasks=workflow_tasks,
        kinds=(rows.ACT_START_TO_CLOSE, rows.WFT_TIMEOUT),
    )
