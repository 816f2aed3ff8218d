"""Inline activities: run a workflow task's activities *before* recording their schedule.

When a workflow task's commands schedule activities this worker serves on the workflow's own
task queue, the worker starts up to ``MAX_INLINE`` of them at once, in reserved activity slots,
and waits up to the worker's ``inline_activity_budget`` before completing the task:

* an activity that succeeded by then travels in the completion
  (``CompleteWorkflowTaskRequest.inline_results``): the server records it as scheduled and
  completed in the completion's own transaction and answers with the next workflow task
  (``eager_workflow_task``), so one sequential step costs one RPC and one commit;
* one still running (or failed, heartbeating, completing asynchronously) is listed in
  ``inline_started_activity_ids``: recorded as scheduled and started by this worker, it goes on
  running and reports, once that completion was answered, like any activity, with a token this
  worker minted that names it by activity id (``inline_token``).

What this relies on (docs/inline-activities.md): activities are at-least-once. Nothing is
acknowledged before it commits; an activity whose schedule was not recorded yet (the worker
died, the completion was refused) runs again when the workflow task is retried.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from chronicle.history import wire
from chronicle.history.commands import ScheduleActivity
from chronicle.protos.v1 import common_pb2, service_pb2

__all__ = ["MAX_INLINE", "InlineBatch", "InlineRun", "activity_task", "inline_token"]

MAX_INLINE = 3
"""Activities one workflow task may run inline (the rest are dispatched eagerly or queued)."""


def inline_token(namespace: str, workflow_id: str, run_id: str, activity_id: str) -> bytes:
    """The task token of an inline activity's attempt 1: it names the activity by its id.

    The one token a worker mints itself; the server reads it in ``server/engine/tokens.py``.
    """
    fields = {
        "t": "act",
        "ns": namespace,
        "wid": workflow_id,
        "rid": run_id,
        "aid": activity_id,
        "attempt": 1,
    }
    return json.dumps(fields, separators=(",", ":")).encode()


def activity_task(
    namespace: str, task: service_pb2.PollWorkflowTaskResponse, command: ScheduleActivity
) -> service_pb2.PollActivityTaskResponse:
    """The activity task an inline run executes, as the server would have dispatched it."""
    execution = task.workflow_execution
    activity_id = command.activity_id or str(command.seq)
    now = wire.timestamp_to_proto(datetime.now(UTC))
    message = service_pb2.PollActivityTaskResponse(
        task_token=inline_token(namespace, execution.workflow_id, execution.run_id, activity_id),
        workflow_execution=execution,
        workflow_type=task.workflow_type,
        activity_id=activity_id,
        activity_type=command.activity_type,
        input=wire.payloads_to_proto(command.input),
        attempt=1,
        scheduled_time=now,
        started_time=now,
        task_queue=command.task_queue or task.task_queue,
        current_attempt_scheduled_time=now,
    )
    start_to_close = command.start_to_close_timeout or command.schedule_to_close_timeout
    if start_to_close is not None:
        message.start_to_close_timeout.CopyFrom(wire.duration_to_proto(start_to_close))
    if command.heartbeat_timeout is not None:
        message.heartbeat_timeout.CopyFrom(wire.duration_to_proto(command.heartbeat_timeout))
    return message


class InlineRun:
    """One activity running before its schedule is recorded (all methods on the worker loop)."""

    def __init__(self, batch: InlineBatch, activity_id: str) -> None:
        self.activity_id = activity_id
        self.result: common_pb2.Payload | None = None
        self.delivered = False
        self._detached = False
        self._batch = batch
        self._recorded: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def deliver(self, result: common_pb2.Payload) -> bool:
        """Hand the result to the completion; False when it already went without this one."""
        if self._detached or self.delivered:
            return False
        self.delivered, self.result = True, result
        self._batch.settle()
        return True

    def detach(self) -> None:
        """From now on the activity reports by itself, once its schedule is recorded."""
        if not self.delivered and not self._detached:
            self._detached = True
            self._batch.settle()

    async def recorded(self) -> bool:
        """Detach, then wait for the completion that records this activity as started;
        False when that completion was not accepted (nothing about the activity is recorded)."""
        self.detach()
        return await asyncio.shield(self._recorded)

    def resolve(self, recorded: bool) -> None:
        """The completion listing this activity was answered (``recorded``) or refused."""
        if not self._recorded.done():
            self._recorded.set_result(recorded)


class InlineBatch:
    """The inline activities of one workflow-task completion."""

    def __init__(self) -> None:
        self.runs: list[InlineRun] = []
        self._unsettled = 0
        self._all_settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def add(self, activity_id: str) -> InlineRun:
        """A new run in this batch."""
        run = InlineRun(self, activity_id)
        self.runs.append(run)
        self._unsettled += 1
        return run

    def settle(self) -> None:
        """One run delivered its result or detached."""
        self._unsettled -= 1
        if self._unsettled == 0 and not self._all_settled.done():
            self._all_settled.set_result(None)

    async def wait(self, budget: float) -> None:
        """Wait until every run settled or ``budget`` seconds passed; detach the unsettled."""
        if self.runs and not self._all_settled.done():
            await asyncio.wait((self._all_settled,), timeout=budget)
        for run in self.runs:
            run.detach()

    def resolve(self, recorded: bool) -> None:
        """The completion was answered (``recorded``) or refused: release detached runs."""
        for run in self.runs:
            run.resolve(recorded)
