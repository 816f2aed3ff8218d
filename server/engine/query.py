"""QueryWorkflow: ask a worker to run a read-only query handler against a run's state.

Open and closed runs alike: a worker answers from its cached instance or by replaying the
history. Nothing is written. The handler's failure (an unknown query name included) is the
answer's ``failure``, for the client to raise as the error it describes.
"""

from __future__ import annotations

from chronicle.history.values import Failure, Payload
from chronicle.server import errors
from chronicle.server.engine import read
from chronicle.server.engine.services import Services
from chronicle.server.matching.queries import QueryTask
from chronicle.server.store import sql


async def ask_worker(
    services: Services,
    namespace: str,
    workflow_id: str,
    run_id: str,
    *,
    name: str,
    args: tuple[Payload, ...],
    timeout: float,
    validate_update: bool = False,
    first_run_id: str = "",
) -> tuple[Payload | None, Failure | None]:
    """Route a query (or an update validation) of the run to a polling worker; its answer.

    ``first_run_id``: only a run of the chain that run started (``read.resolve_run``)."""
    key = await read.resolve_run(services.pool, namespace, workflow_id, run_id, first_run_id)
    row = await services.pool.fetchrow(sql.GET_EXECUTION, *key.params())
    if row is None:
        raise read.not_found(workflow_id, run_id)
    task = QueryTask(
        key=key,
        workflow_type=row["workflow_type"],
        task_queue=row["task_queue"],
        name=name,
        args=args,
        validate_update=validate_update,
    )
    return await services.queries.ask(task, timeout, services.config.query_pickup_timeout)


async def query(
    services: Services,
    namespace: str,
    workflow_id: str,
    run_id: str,
    *,
    name: str,
    args: tuple[Payload, ...],
    timeout: float,
    first_run_id: str = "",
) -> tuple[Payload | None, Failure | None]:
    """The query handler's answer, or its failure (``first_run_id``: see ``ask_worker``)."""
    if not name:
        raise errors.InvalidArgument("query_name is required", field="query_name")
    return await ask_worker(
        services,
        namespace,
        workflow_id,
        run_id,
        name=name,
        args=args,
        timeout=timeout,
        first_run_id=first_run_id,
    )
