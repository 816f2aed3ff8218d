"""QueryWorkflow: ask a worker to run a read-only query handler against a run's state."""

from __future__ import annotations

from chronicle.history.values import Payload
from chronicle.server import errors
from chronicle.server.engine import read
from chronicle.server.engine.services import Services
from chronicle.server.matching.queries import QueryTask
from chronicle.server.store import sql


async def query(
    services: Services,
    namespace: str,
    workflow_id: str,
    run_id: str,
    *,
    name: str,
    args: tuple[Payload, ...],
    timeout: float,
) -> Payload | None:
    """The query handler's answer; ``FailedPrecondition`` when the handler failed."""
    key = await read.resolve_run(services.pool, namespace, workflow_id, run_id)
    row = await services.pool.fetchrow(sql.GET_EXECUTION, *key.params())
    if row is None:
        raise read.not_found(workflow_id, run_id)
    task = QueryTask(
        key=key,
        workflow_type=row["workflow_type"],
        task_queue=row["task_queue"],
        name=name,
        args=args,
    )
    result, failure = await services.queries.ask(task, timeout)
    if failure is not None:
        raise errors.FailedPrecondition(f"query '{name}' failed: {failure.message}")
    return result
