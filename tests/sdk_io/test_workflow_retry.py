"""The workflow retry policy (``client.start(..., retry=RetryPolicy(...))``) over a real server:
what is retried, the run timeout of a retry run, and the policies a start refuses."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta

import pytest

from chronicle import Client, RetryPolicy, WorkflowFailed, WorkflowNotFound
from chronicle.history import commands as cmd
from chronicle.history import wire
from chronicle.history.values import Failure
from chronicle.protos.v1 import common_pb2, service_pb2
from chronicle.sdk._grpc import InvalidArgumentError, NotFoundError
from chronicle.sdk.worker import Worker
from chronicle.sdk.workflow import workflow
from chronicle.server.engine.tokens import WorkflowTaskToken
from chronicle.server.store.rows import RunKey
from tests.sdk_io.test_semantics_runs import fails_until

QUEUE = "retry-review"


@workflow(name="cancels_itself_once")
async def cancels_itself_once() -> int:
    attempt = workflow.info().attempt
    if attempt == 1:
        raise asyncio.CancelledError  # no cancel was requested: the run fails, as cancelled
    return attempt


async def _run_count(client: Client, workflow_id: str) -> int:
    return len([r async for r in client.list(f"workflow_id = '{workflow_id}'")])


async def test_a_run_that_fails_as_cancelled_is_not_retried(client: Client) -> None:
    """Temporal retries neither a cancelled nor a terminated failure (its ``isRetryable``): a
    workflow that cancels itself fails for good, whatever its retry policy."""
    policy = RetryPolicy(maximum_attempts=2, initial_interval=timedelta(milliseconds=100))
    async with Worker(client, task_queue=QUEUE, workflows=[cancels_itself_once]):
        handle = await client.start(
            cancels_itself_once, id="cancels-itself", task_queue=QUEUE, retry=policy
        )
        with pytest.raises(WorkflowFailed):
            await asyncio.wait_for(handle.result(), 20)
    assert await _run_count(client, "cancels-itself") == 1
    last = (await handle.history())[-1]
    assert (last.type, last.attributes.new_run_id) == ("WorkflowFailed", "")


async def test_a_retry_runs_even_when_its_back_off_is_longer_than_the_run_timeout(
    client: Client,
) -> None:
    """The run timeout of a retry run counts from the end of its back-off (Temporal adds the
    first workflow task back-off to the run timeout): otherwise a back-off at least as long as
    the run timeout times the retry out before it ever runs."""
    policy = RetryPolicy(maximum_attempts=2, initial_interval=timedelta(seconds=4))
    async with Worker(client, task_queue=QUEUE, workflows=[fails_until]):
        handle = await client.start(
            fails_until,
            2,
            False,
            id="backs-off-past-run-timeout",
            task_queue=QUEUE,
            retry=policy,
            run_timeout=timedelta(seconds=3),
        )
        assert await asyncio.wait_for(handle.result(), 30) == 2


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        (common_pb2.RetryPolicy(backoff_coefficient=math.nan), "backoff_coefficient"),
        (common_pb2.RetryPolicy(backoff_coefficient=0.5), "backoff_coefficient"),
        (common_pb2.RetryPolicy(maximum_attempts=-1), "maximum_attempts"),
        (
            common_pb2.RetryPolicy(initial_interval=wire.duration_to_proto(timedelta(0))),
            "initial_interval",
        ),
        (
            common_pb2.RetryPolicy(initial_interval=wire.duration_to_proto(timedelta(days=36_526))),
            "initial_interval",
        ),
    ],
)
async def test_a_start_with_an_invalid_retry_policy_is_refused_and_writes_nothing(
    client: Client, policy: common_pb2.RetryPolicy, field: str
) -> None:
    """A raw StartWorkflow (the SDK's ``RetryPolicy`` refuses these itself) answers
    INVALID_ARGUMENT naming the field, and no run exists afterwards."""
    request = service_pb2.StartWorkflowRequest(
        namespace=client.namespace,
        workflow_id="bad-policy",
        workflow_type="fails_until",
        task_queue=QUEUE,
        retry_policy=policy,
    )
    with pytest.raises(InvalidArgumentError, match=field):
        await client.connection.call("StartWorkflow", request, retry_timeout=0)
    with pytest.raises(WorkflowNotFound):
        await client.get_handle("bad-policy").describe()


def test_the_sdk_retry_policy_refuses_a_nan_backoff_coefficient() -> None:
    with pytest.raises(ValueError, match="backoff_coefficient"):
        RetryPolicy(backoff_coefficient=math.nan)


async def test_a_failing_answer_for_a_run_that_does_not_exist_is_not_found(client: Client) -> None:
    """A ``FailWorkflow`` answer reads the run's ``WorkflowStarted`` for its retry policy before
    the transition; a token naming no run is NOT_FOUND there too (as any other answer), not an
    internal error."""
    token = WorkflowTaskToken(RunKey(client.namespace, "no-such-workflow", "no-such-run"), 2, 3)
    request = service_pb2.CompleteWorkflowTaskRequest(
        namespace=client.namespace,
        task_token=token.encode(),
        commands=[wire.command_to_proto(cmd.FailWorkflow(failure=Failure(message="boom")))],
        identity="review",
    )
    with pytest.raises(NotFoundError):
        await client.connection.call("CompleteWorkflowTask", request, retry_timeout=0)
