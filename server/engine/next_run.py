"""The run that carries a workflow on after its run closed: continue-as-new, or a retry.

A run started with a retry policy (``client.start(..., retry=RetryPolicy(...))``) whose workflow
function fails is retried like an activity, as a new run of the same workflow id: the failed run
closes with ``WorkflowFailed`` naming the new run (``new_run_id``), and the new run starts in
the same transaction with the same input, ``attempt`` + 1 and the back-off as its
``start_delay`` (a server timer schedules its first workflow task). Both closes go on in the new
run in the same way: the parent is not told, ``GetWorkflowResult`` follows, and the execution
timeout spans the whole chain.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from chronicle.history import codec
from chronicle.history import events as ev
from chronicle.history.state import WorkflowState
from chronicle.history.values import Failure, FailureKind, Payload, TimeoutType
from chronicle.server import errors
from chronicle.server.engine import start
from chronicle.server.engine import transition as tr
from chronicle.server.store import sql
from chronicle.server.store.pool import Conn, Pool
from chronicle.server.store.rows import RunKey

__all__ = ["continue_run", "retry_delay", "retryable", "started_event"]


async def started_event(db: Conn | Pool, key: RunKey) -> ev.WorkflowStarted:
    """The run's ``WorkflowStarted`` (event 1, never changed while the run exists).

    ``errors.NotFound`` when the run does not exist (a worker's answer naming no run is
    NOT_FOUND, like any stale answer)."""
    first = await db.fetchrow(sql.GET_EVENT, *key.params(), 1)
    if first is None:
        raise errors.NotFound(f"workflow '{key.workflow_id}' run '{key.run_id}' not found")
    started = codec.decode_attributes("WorkflowStarted", first["attributes"])
    assert isinstance(started, ev.WorkflowStarted)
    return started


def retry_delay(
    started: ev.WorkflowStarted, state: WorkflowState, failure: Failure, now: datetime
) -> timedelta | None:
    """The back-off before the next attempt of a run that fails with ``failure`` now; None when
    it is not retried (no retry policy, a failure that is not ``retryable`` or that the policy
    makes non-retryable, the last attempt, or the next attempt could not start before the
    execution timeout)."""
    policy = started.retry_policy
    if policy is None or not retryable(failure):
        return None
    if not policy.allows_retry(started.attempt, failure):
        return None
    try:
        delay = policy.backoff(started.attempt)
    except OverflowError:
        delay = policy.effective_maximum_interval()
    deadline = (
        state.start_time + started.execution_timeout
        if started.execution_timeout is not None and state.start_time is not None
        else None
    )
    if deadline is not None and now + delay >= deadline:
        return None
    return delay


def retryable(failure: Failure) -> bool:
    """Whether a workflow that fails with ``failure`` may be retried at all, as Temporal decides
    (its ``isRetryable``): never a cancelled or terminated failure (a workflow that cancelled
    itself), nor a timeout other than an activity's start-to-close or heartbeat one."""
    if failure.kind in (FailureKind.CANCELLED, FailureKind.TERMINATED):
        return False
    return failure.kind is not FailureKind.TIMEOUT or failure.timeout_type in (
        TimeoutType.START_TO_CLOSE,
        TimeoutType.HEARTBEAT,
    )


async def continue_run(
    conn: Conn,
    key: RunKey,
    outcome: tr.Outcome,
    *,
    new_run_id: str,
    workflow_type: str,
    task_queue: str,
    input: tuple[Payload, ...],
    attempt: int = 1,
    start_delay: timedelta | None = None,
) -> None:
    """Start run ``new_run_id`` of ``key``'s workflow id, in the transaction that closed ``key``
    (``outcome``): options from the closed run's ``WorkflowStarted``, what is left of the
    execution timeout, and the same first run id."""
    old = await started_event(conn, key)
    close_time = outcome.events[-1].time
    execution_timeout = old.execution_timeout
    if execution_timeout is not None and outcome.previous.start_time is not None:
        # The execution timeout spans the whole chain of runs: carry over what is left of it.
        elapsed = close_time - outcome.previous.start_time
        execution_timeout = max(execution_timeout - elapsed, timedelta(milliseconds=1))
    started = ev.WorkflowStarted(
        workflow_type=workflow_type,
        task_queue=task_queue,
        input=input,
        workflow_task_timeout=old.workflow_task_timeout,
        execution_timeout=execution_timeout,
        run_timeout=old.run_timeout,
        retry_policy=old.retry_policy,
        attempt=attempt,
        random_seed=random.getrandbits(63),
        memo=old.memo,
        search_attributes=old.search_attributes,
        parent=old.parent,
        first_run_id=old.first_run_id or key.run_id,
        continued_from_run_id=key.run_id,
        start_delay=start_delay,
    )
    new_key = RunKey(key.namespace, key.workflow_id, new_run_id)
    await start.create_run(conn, new_key, started, [], close_time, replace_current=True)
