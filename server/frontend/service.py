"""The ``WorkflowService`` servicer: decode the request, call the engine, encode the answer.

Every method is wrapped by ``_errors.rpc`` (the one error → status mapping). Long polls are
capped by both ``ServerConfig.poll_timeout`` and the caller's gRPC deadline.
"""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from typing import Any

from chronicle.history import wire
from chronicle.history.values import Failure
from chronicle.protos.v1 import service_pb2, service_pb2_grpc
from chronicle.server import crash_points, errors
from chronicle.server.engine import (
    activity_task,
    control,
    lost_answers,
    query,
    read,
    reset,
    start,
    update,
    worker_sessions,
    workers,
    workflow_task,
)
from chronicle.server.engine.services import Services
from chronicle.server.frontend import call_stream, task_protos
from chronicle.server.frontend._errors import rpc
from chronicle.server.frontend._validate import check_message, check_values, namespace, require
from chronicle.server.matching import poller
from chronicle.server.matching.queries import QueryTask
from chronicle.server.matching.remote_queries import ClaimedQuery
from chronicle.server.store.rows import RunKey

QUERY_TIMEOUT = 30.0
"""Seconds a query waits for a worker's answer at most (also capped by the deadline)."""

DEADLINE_MARGIN = 0.2
"""Seconds a long poll leaves before the caller's deadline, to answer in time."""


def _duration(request: Any, name: str) -> timedelta | None:
    return wire.duration_from_proto(request, name)


class WorkflowService(service_pb2_grpc.WorkflowServiceServicer):
    """The gRPC API of one server process."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._limit = services.config.max_payload_bytes
        self._lost: set[asyncio.Task[None]] = set()
        """Background work of ended sessions (row deletion, lost-worker passes)."""
        self._sessions: dict[tuple[str, str], int] = {}
        """Open WorkerSession streams on this server, by (namespace, identity)."""

    def _wait(self, context: Any, requested: float | None = None) -> float:
        """How long a call may wait: ``requested`` (a query's time for a worker to answer) or
        the long-poll limit, and never past the caller's deadline."""
        limit = self._services.config.poll_timeout if requested is None else requested
        remaining = context.time_remaining()
        if remaining is not None:
            limit = min(limit, remaining - DEADLINE_MARGIN)
        return max(limit, 0.0)

    def _long_poll(self, context: Any, wait: timedelta | None) -> float:
        """How long a long poll that asked to wait ``wait`` (None: the default) may wait: at
        most ``poll_timeout``, as every long poll (a watched run stays marked for that long
        at most, ``engine/watch.py``); clients ask again."""
        limit = self._services.config.poll_timeout
        return self._wait(context, limit if wait is None else min(wait.total_seconds(), limit))

    def _check(self, request: Any) -> None:
        check_message(request, self._limit)

    # ---------------------------------------------------------------- client RPCs

    @rpc
    async def StartWorkflow(
        self, request: service_pb2.StartWorkflowRequest, context: Any
    ) -> service_pb2.StartWorkflowResponse:
        """Start a workflow run (or return an existing one per the id policies)."""
        self._check(request)
        retry_policy = None
        if request.HasField("retry_policy"):
            try:
                retry_policy = wire.retry_policy_from_proto(request.retry_policy)
            except ValueError as exc:
                raise errors.InvalidArgument(f"retry_policy: {exc}", field="retry_policy") from exc
        outcome = await start.start_workflow(
            self._services,
            start.StartRequest(
                namespace=namespace(request),
                workflow_id=request.workflow_id,
                workflow_type=request.workflow_type,
                task_queue=request.task_queue,
                input=wire.payloads_from_proto(request.input),
                request_id=request.request_id,
                id_conflict_policy=request.id_conflict_policy,
                id_reuse_policy=request.id_reuse_policy,
                execution_timeout=_duration(request, "execution_timeout"),
                run_timeout=_duration(request, "run_timeout"),
                workflow_task_timeout=_duration(request, "workflow_task_timeout"),
                start_delay=_duration(request, "start_delay"),
                retry_policy=retry_policy,
                memo={k: wire.payload_from_proto(v) for k, v in request.memo.items()},
                search_attributes={
                    k: wire.payload_from_proto(v) for k, v in request.search_attributes.items()
                },
                signal_name=request.signal_name,
                signal_input=wire.payloads_from_proto(request.signal_input),
                identity=request.identity,
            ),
        )
        return service_pb2.StartWorkflowResponse(
            run_id=outcome.run_id,
            started=outcome.started,
            first_execution_run_id=outcome.first_run_id,
        )

    @rpc
    async def SignalWorkflow(
        self, request: service_pb2.SignalWorkflowRequest, context: Any
    ) -> service_pb2.SignalWorkflowResponse:
        """Deliver a signal to an open run."""
        require(request, "workflow_id", "signal_name")
        self._check(request)
        await control.signal(
            self._services,
            namespace(request),
            request.workflow_id,
            request.run_id,
            signal_name=request.signal_name,
            input=wire.payloads_from_proto(request.input),
            identity=request.identity,
            request_id=request.request_id,
            first_run_id=request.first_execution_run_id,
        )
        return service_pb2.SignalWorkflowResponse()

    @rpc
    async def QueryWorkflow(
        self, request: service_pb2.QueryWorkflowRequest, context: Any
    ) -> service_pb2.QueryWorkflowResponse:
        """Run a query handler on a worker; waits for its answer (up to the deadline)."""
        require(request, "workflow_id", "query_name")
        self._check(request)
        result, failure = await query.query(
            self._services,
            namespace(request),
            request.workflow_id,
            request.run_id,
            name=request.query_name,
            args=wire.payloads_from_proto(request.args),
            timeout=self._wait(context, QUERY_TIMEOUT),
            first_run_id=request.first_execution_run_id,
        )
        response = service_pb2.QueryWorkflowResponse()
        if failure is not None:
            response.failure.CopyFrom(wire.failure_to_proto(failure))
        elif result is not None:
            response.result.CopyFrom(wire.payload_to_proto(result))
        return response

    @rpc
    async def UpdateWorkflow(
        self, request: service_pb2.UpdateWorkflowRequest, context: Any
    ) -> service_pb2.UpdateWorkflowResponse:
        """Validate an update on a worker, record it, and wait (up to ``wait``) for its outcome."""
        require(request, "workflow_id", "update_name", "update_id")
        self._check(request)
        wait = _duration(request, "wait")
        outcome = await update.update(
            self._services,
            namespace(request),
            request.workflow_id,
            request.run_id,
            name=request.update_name,
            args=wire.payloads_from_proto(request.args),
            update_id=request.update_id,
            identity=request.identity,
            validate_timeout=self._wait(context, QUERY_TIMEOUT),
            wait=self._long_poll(context, wait),
            first_run_id=request.first_execution_run_id,
        )
        response = service_pb2.UpdateWorkflowResponse(
            completed=outcome.completed, run_id=outcome.run_id
        )
        if outcome.failure is not None:
            response.failure.CopyFrom(wire.failure_to_proto(outcome.failure))
        elif outcome.result is not None:
            response.result.CopyFrom(wire.payload_to_proto(outcome.result))
        return response

    @rpc
    async def RespondQueryTask(
        self, request: service_pb2.RespondQueryTaskRequest, context: Any
    ) -> service_pb2.RespondQueryTaskResponse:
        """A worker's answer to a query task."""
        self._check(request)
        result = wire.optional_payload_from_proto(request, "result")
        failure = wire.failure_from_proto(request.failure) if request.HasField("failure") else None
        await self._services.queries.respond(request.task_token, result, failure)
        return service_pb2.RespondQueryTaskResponse()

    @rpc
    async def RequestCancelWorkflow(
        self, request: service_pb2.RequestCancelWorkflowRequest, context: Any
    ) -> service_pb2.RequestCancelWorkflowResponse:
        """Ask an open run to cancel."""
        require(request, "workflow_id")
        await control.request_cancel(
            self._services,
            namespace(request),
            request.workflow_id,
            request.run_id,
            reason=request.reason,
            identity=request.identity,
            request_id=request.request_id,
            first_run_id=request.first_execution_run_id,
        )
        return service_pb2.RequestCancelWorkflowResponse()

    @rpc
    async def TerminateWorkflow(
        self, request: service_pb2.TerminateWorkflowRequest, context: Any
    ) -> service_pb2.TerminateWorkflowResponse:
        """Close an open run without running workflow code."""
        require(request, "workflow_id")
        await control.terminate(
            self._services,
            namespace(request),
            request.workflow_id,
            request.run_id,
            reason=request.reason,
            identity=request.identity,
            first_run_id=request.first_execution_run_id,
        )
        return service_pb2.TerminateWorkflowResponse()

    @rpc
    async def ResetWorkflow(
        self, request: service_pb2.ResetWorkflowRequest, context: Any
    ) -> service_pb2.ResetWorkflowResponse:
        """Terminate the run and rerun it from a workflow-task boundary (engine/reset.py)."""
        require(request, "workflow_id")
        result = await reset.reset(
            self._services,
            namespace(request),
            request.workflow_id,
            request.run_id,
            event_id=request.event_id,
            to_last_good=request.to_last_good,
            reapply_signals=request.reapply_signals,
            reason=request.reason,
            identity=request.identity,
            first_run_id=request.first_execution_run_id,
        )
        return service_pb2.ResetWorkflowResponse(run_id=result.run_id, event_id=result.event_id)

    @rpc
    async def DescribeWorkflow(
        self, request: service_pb2.DescribeWorkflowRequest, context: Any
    ) -> service_pb2.DescribeWorkflowResponse:
        """Execution info, pending activities and children, workflow-task trouble."""
        require(request, "workflow_id")
        return await read.describe(
            self._services,
            namespace(request),
            request.workflow_id,
            request.run_id,
            request.first_execution_run_id,
        )

    @rpc
    async def GetWorkflowHistory(
        self, request: service_pb2.GetWorkflowHistoryRequest, context: Any
    ) -> service_pb2.GetWorkflowHistoryResponse:
        """A page of history events; long-polls for new ones when ``wait`` is set."""
        require(request, "workflow_id")
        wait = _duration(request, "wait")
        if wait is not None:
            wait = timedelta(seconds=self._long_poll(context, wait))
        return await read.get_history(
            self._services,
            namespace(request),
            request.workflow_id,
            request.run_id,
            request.first_event_id,
            wait,
            request.first_execution_run_id,
        )

    @rpc
    async def GetWorkflowResult(
        self, request: service_pb2.GetWorkflowResultRequest, context: Any
    ) -> service_pb2.GetWorkflowResultResponse:
        """Long-poll until the run closes (``closed=false`` when ``wait`` runs out)."""
        require(request, "workflow_id")
        wait = _duration(request, "wait")
        seconds = self._long_poll(context, wait)
        return await read.get_result(
            self._services,
            namespace(request),
            request.workflow_id,
            request.run_id,
            request.follow_runs,
            seconds,
        )

    @rpc
    async def ListWorkflows(
        self, request: service_pb2.ListWorkflowsRequest, context: Any
    ) -> service_pb2.ListWorkflowsResponse:
        """Runs matching a query, newest first."""
        return await read.list_workflows(
            self._services,
            namespace(request),
            request.query,
            request.page_size,
            request.next_page_token,
        )

    # ---------------------------------------------------------------- worker RPCs

    @rpc
    async def PollWorkflowTask(
        self, request: service_pb2.PollWorkflowTaskRequest, context: Any
    ) -> service_pb2.PollWorkflowTaskResponse:
        """Long-poll a workflow task; an empty response when none arrives in time."""
        require(request, "task_queue")
        wait = self._wait(context)
        remaining = context.time_remaining()
        with self._services.polling.running(
            namespace(request), request.identity, request.request_id
        ):
            grant = await poller.poll_workflow_task(
                self._services,
                namespace(request),
                request.task_queue,
                request.identity,
                wait,
                # a grant handed after the caller's deadline would reach nobody
                handoff_grace=(
                    math.inf if remaining is None else remaining - DEADLINE_MARGIN - wait
                ),
                request_id=request.request_id,
            )
        if grant is None:
            return service_pb2.PollWorkflowTaskResponse()
        if isinstance(grant, QueryTask | ClaimedQuery):
            return task_protos.query_task(grant)
        return task_protos.workflow_task(grant)

    @rpc
    async def CompleteWorkflowTask(
        self, request: service_pb2.CompleteWorkflowTaskRequest, context: Any
    ) -> service_pb2.CompleteWorkflowTaskResponse:
        """Apply the worker's commands to the run (a stale or repeated answer: NOT_FOUND)."""
        commands = wire.commands_from_proto(request.commands)
        size = request.ByteSize()
        check_values(commands, self._limit, "commands", encoded_size=size)
        inline_results = {
            item.activity_id: wire.optional_payload_from_proto(item, "result")
            for item in request.inline_results
        }
        check_values(
            [p for p in inline_results.values() if p is not None],
            self._limit,
            "inline_results",
            encoded_size=size,
        )
        if len(inline_results) < len(request.inline_results):
            raise errors.InvalidArgument(
                "an inline activity is listed twice", field="inline_results"
            )
        with self._services.answering.running(namespace(request), request.request_id):
            completion = await workflow_task.complete(
                self._services,
                request.task_token,
                commands,
                identity=request.identity,
                sdk_flags=list(request.sdk_flags),
                eager_activity_types=list(request.eager_activity_types),
                max_eager_activities=request.max_eager_activities,
                inline_results=inline_results,
                inline_started=list(request.inline_started_activity_ids),
                eager_workflow_task=request.eager_workflow_task,
                request_id=request.request_id,
            )
        if completion.workflow_task is not None:
            crash_points.reached(crash_points.EAGER_WORKFLOW_TASK_COMMITTED)
        if completion.activity_tasks:
            crash_points.reached(crash_points.EAGER_ACTIVITIES_COMMITTED)
        response = service_pb2.CompleteWorkflowTaskResponse(
            activity_tasks=[task_protos.activity_task(grant) for grant in completion.activity_tasks]
        )
        if completion.workflow_task is not None:
            granted = task_protos.workflow_task(completion.workflow_task)
            response.workflow_task.CopyFrom(granted)
        return response

    @rpc
    async def FailWorkflowTask(
        self, request: service_pb2.FailWorkflowTaskRequest, context: Any
    ) -> service_pb2.FailWorkflowTaskResponse:
        """Record a failed workflow task; it is retried after a back-off."""
        self._check(request)
        failure = wire.failure_from_proto(request.failure) if request.HasField("failure") else None
        await workflow_task.fail(
            self._services,
            request.task_token,
            cause=request.cause,
            failure=failure,
            identity=request.identity,
        )
        return service_pb2.FailWorkflowTaskResponse()

    @rpc
    async def PollActivityTask(
        self, request: service_pb2.PollActivityTaskRequest, context: Any
    ) -> service_pb2.PollActivityTaskResponse:
        """Long-poll an activity task; an empty response when none arrives in time."""
        require(request, "task_queue")
        rate = request.max_activities_per_second
        if not math.isfinite(rate) or rate < 0:
            raise errors.InvalidArgument(
                f"max_activities_per_second must be a finite number >= 0, got {rate}",
                field="max_activities_per_second",
            )
        with self._services.polling.running(
            namespace(request), request.identity, request.request_id
        ):
            grant = await poller.poll_activity_task(
                self._services,
                namespace(request),
                request.task_queue,
                request.identity,
                self._wait(context),
                rate,
                request_id=request.request_id,
            )
        if grant is None:
            return service_pb2.PollActivityTaskResponse()
        return task_protos.activity_task(grant)

    @rpc
    async def CompleteActivityTask(
        self, request: service_pb2.CompleteActivityTaskRequest, context: Any
    ) -> service_pb2.CompleteActivityTaskResponse:
        """Record an activity result (a stale or repeated answer: NOT_FOUND)."""
        self._check(request)
        with self._services.answering.running(namespace(request), request.request_id):
            grant = await activity_task.complete(
                self._services,
                request.task_token,
                wire.optional_payload_from_proto(request, "result"),
                request.identity,
                eager_workflow_task=request.eager_workflow_task,
                request_id=request.request_id,
            )
        if grant is not None:
            crash_points.reached(crash_points.EAGER_WORKFLOW_TASK_COMMITTED)
        response = service_pb2.CompleteActivityTaskResponse()
        if grant is not None:
            response.workflow_task.CopyFrom(task_protos.workflow_task(grant))
        return response

    @rpc
    async def FailActivityTask(
        self, request: service_pb2.FailActivityTaskRequest, context: Any
    ) -> service_pb2.FailActivityTaskResponse:
        """An attempt failed: retried per the activity's policy, or recorded as failed."""
        self._check(request)
        failure = (
            wire.failure_from_proto(request.failure)
            if request.HasField("failure")
            else Failure(message="activity failed")
        )
        await activity_task.fail(self._services, request.task_token, failure, request.identity)
        return service_pb2.FailActivityTaskResponse()

    @rpc
    async def HeartbeatActivityTask(
        self, request: service_pb2.HeartbeatActivityTaskRequest, context: Any
    ) -> service_pb2.HeartbeatActivityTaskResponse:
        """Record progress; answers whether cancellation was requested."""
        self._check(request)
        cancel = await activity_task.heartbeat(
            self._services,
            request.task_token,
            wire.payloads_from_proto(request.details),
            request.identity,
            handed_off=request.handed_off,
        )
        return service_pb2.HeartbeatActivityTaskResponse(cancel_requested=cancel)

    @rpc
    async def ReleaseEagerWorkflowTask(
        self, request: service_pb2.ReleaseEagerWorkflowTaskRequest, context: Any
    ) -> service_pb2.ReleaseEagerWorkflowTaskResponse:
        """A worker lost the answer to a completion that asked for eager tasks: the workflow
        task it started for the worker, if still outstanding, times out now, and the activity
        attempts go back to their queue uncounted (``lost_answers.py``). The same for the polls
        ``poll_request_ids`` (on any run), which are also ended where they still run."""
        if request.poll_request_ids:
            if request.request_id or request.HasField("workflow_execution"):
                raise errors.InvalidArgument(
                    "a release names either polls (poll_request_ids) or one completion "
                    "(workflow_execution and request_id), not both",
                    field="poll_request_ids",
                )
            tasks, activities = await lost_answers.release_polls(
                self._services.pool,
                namespace(request),
                identity=request.identity,
                request_ids=list(request.poll_request_ids),
            )
            return service_pb2.ReleaseEagerWorkflowTaskResponse(
                released=bool(tasks), activities_released=activities, workflow_tasks_released=tasks
            )
        require(request.workflow_execution, "workflow_id", "run_id")
        execution = request.workflow_execution
        released = await lost_answers.release(
            self._services.pool,
            self._services.answering,
            RunKey(namespace(request), execution.workflow_id, execution.run_id),
            identity=request.identity,
            request_id=request.request_id,
        )
        return service_pb2.ReleaseEagerWorkflowTaskResponse(
            released=released.workflow_task,
            activities_released=released.activities,
            workflow_tasks_released=int(released.workflow_task),
        )

    async def CallStream(self, request_iterator: Any, context: Any) -> None:
        """The unary methods multiplexed on one stream (``call_stream.py``)."""
        await call_stream.serve(self, context, self._services.notifier.is_stopping)

    @rpc
    async def WorkerSession(self, request: service_pb2.WorkerSessionRequest, context: Any) -> None:
        """Held open by a running worker; its break (not a server stop) means the worker is lost.

        Records the session in ``worker_sessions`` (so other replicas know the worker is alive
        here), answers one message when established, then waits. When it ends while the server
        is not stopping, its row is deleted in the background, and if the stream was cancelled
        (the worker's connection closed) ``workers.worker_lost`` runs: the worker's started
        tasks time out now (docs/performance.md), unless a newer session of the worker is open
        on any replica (docs/decisions.md §8).
        """
        require(request, "identity")
        notifier = self._services.notifier
        ns, identity = namespace(request), request.identity
        key = (ns, identity)
        session = worker_sessions.WorkerSession(ns, identity)
        lost = False
        self._sessions[key] = self._sessions.get(key, 0) + 1
        try:
            await worker_sessions.record_open(self._services, session)
            await context.write(service_pb2.WorkerSessionResponse())
            with notifier.subscribe("session", identity) as waiter:
                while not notifier.is_stopping():
                    waiter.clear()
                    await waiter.wait(3600.0)
        except asyncio.CancelledError:
            lost = True
            raise
        finally:
            self._sessions[key] -= 1
            if not self._sessions[key]:
                del self._sessions[key]
            if not notifier.is_stopping():
                ended = asyncio.create_task(
                    workers.session_ended(
                        self._services,
                        session,
                        lost=lost,
                        reconnected=lambda: self._sessions.get(key, 0) > 0,
                    )
                )
                self._lost.add(ended)
                ended.add_done_callback(self._lost.discard)
