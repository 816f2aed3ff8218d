"""Long polls for workflow and activity tasks: try to lease, else wait for a NOTIFY.

The waiter is registered before the first attempt, so a task inserted between an empty attempt
and the wait wakes the poller. Workflow-task polls also re-check every ``sticky_timeout``: a
task sticky to another worker becomes available to anyone once it is that old, without any
notification.
"""

from __future__ import annotations

import asyncio

from chronicle.server.engine import activity_task, dispatch, grants
from chronicle.server.engine import tasks as rows
from chronicle.server.engine.services import Services
from chronicle.server.matching import handoff as handoff_mod
from chronicle.server.matching import rate_limit
from chronicle.server.matching.queries import QueryGrant
from chronicle.server.store import notify


async def poll_workflow_task(
    services: Services,
    namespace: str,
    task_queue: str,
    identity: str,
    timeout: float,
    handoff_grace: float = handoff_mod.HANDOFF_WAIT,
    request_id: str = "",
) -> grants.WorkflowTaskGrant | QueryGrant | None:
    """The next query or workflow task of the queue, or None after ``timeout`` seconds.

    Queries first: this process's own (memory), then, when an offer was announced for the
    queue, one claimed from ``pending_queries`` (``remote_queries.py``).

    While it waits, the poll is offered to starts on this server (``handoff.py``). Taken by a
    start when its time is up, it waits up to ``handoff_grace`` more seconds for the grant
    (at most what is left before the caller's deadline).

    A workflow task started for the poll records ``request_id`` (``dispatch.dispatch``)."""
    waiter = notify.Waiter()
    handoff = services.handoff
    with handoff.waiting(namespace, task_queue, identity, waiter, request_id) as offered:

        async def attempt() -> grants.WorkflowTaskGrant | QueryGrant | None:
            if offered.taken or offered.grant is not None:
                return offered.grant  # None while a start's commit is in flight
            query = services.queries.take(namespace, task_queue, identity)
            if query is not None:
                return query
            handoff.pause(namespace, task_queue, offered)  # a start must not hand it a task now
            # A published query (asked on any replica): one statement, only after an offer.
            claimed = await services.queries.remote.claim(namespace, task_queue, identity)
            if claimed is not None:
                return claimed
            granted = await dispatch.dispatch(services, namespace, task_queue, identity, request_id)
            if granted is None:
                handoff.resume(namespace, task_queue, offered)
            return granted

        try:
            result: grants.WorkflowTaskGrant | QueryGrant | None
            result = await services.notifier.long_poll(
                notify.TASK_CHANNEL,
                notify.task_key(rows.WORKFLOW, namespace, task_queue),
                attempt,
                timeout,
                recheck=services.config.sticky_timeout.total_seconds(),
                waiter=waiter,
            )
            if result is None and offered.taken:
                result = await offered.settled(min(handoff_grace, handoff_mod.HANDOFF_WAIT))
        except BaseException:
            if offered.grant is not None:
                # A start handed this poll a task (committed) and the poll ends without it
                # (cancelled): time the task out now rather than after its timeout.
                task = grants.StartedTask.of_grant(offered.grant, identity)
                await asyncio.shield(
                    grants.expire_unclaimed(services, task, "handed to a poll that ended")
                )
            raise
        return result


async def poll_activity_task(
    services: Services,
    namespace: str,
    task_queue: str,
    identity: str,
    timeout: float,
    max_per_second: float = 0.0,
    request_id: str = "",
) -> activity_task.ActivityTaskGrant | None:
    """The next activity task of the queue, or None after ``timeout`` seconds.

    ``max_per_second > 0`` limits the whole queue to that many dispatches per second; without
    it the queue's configured limit, if any, applies (``rate_limit.py``), looked up at each
    attempt: a limit set while the poll waits applies to it. The attempt started for the poll
    records ``request_id`` (``activity_task.dispatch``)."""
    deadline = asyncio.get_running_loop().time() + timeout
    if max_per_second > 0:
        services.rate_limits.invalidate(namespace)  # this poll sets the queue's limit

    async def current_rate() -> float:
        if max_per_second > 0:
            return max_per_second
        return (await services.rate_limits.rates(namespace)).get(task_queue, 0.0)

    async with activity_task.unclaimed(services, namespace, task_queue, identity) as sent:

        async def dispatch() -> activity_task.ActivityTaskGrant | None:
            return await activity_task.dispatch(
                services, namespace, task_queue, identity, sent, request_id
            )

        async def attempt() -> activity_task.ActivityTaskGrant | None:
            rate = await current_rate()
            if rate > 0:
                return await rate_limit.limited(
                    services.pool, namespace, task_queue, rate, deadline, dispatch
                )
            return await dispatch()

        return await services.notifier.long_poll(
            notify.TASK_CHANNEL,
            notify.task_key(rows.ACTIVITY, namespace, task_queue),
            attempt,
            timeout,
        )
