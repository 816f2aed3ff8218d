"""A workflow-task completion's commands → command-events. Pure.

Validates the commands against the run (close command last and alone, positive timer
durations, activity types) and turns each into its event, resolving ``seq`` references
(``CancelTimer``, ``RequestCancelActivity``) against the pending operations, including those
created earlier in the same batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Final

from chronicle.history import commands as cmd
from chronicle.history import events as ev
from chronicle.history.state import WorkflowState
from chronicle.history.values import RetryPolicy
from chronicle.server import errors
from chronicle.server.config import ServerConfig
from chronicle.server.engine import limits
from chronicle.server.store.rows import ActivityInfo

_PARENT_CLOSE_POLICIES = ("terminate", "request_cancel", "abandon")


_IDENTIFIERS: Final[dict[type[cmd.Command], tuple[str, ...]]] = {
    cmd.ScheduleActivity: ("activity_id", "activity_type", "task_queue"),
    cmd.StartChildWorkflow: ("workflow_id", "workflow_type", "task_queue"),
    cmd.SignalExternalWorkflow: ("workflow_id", "run_id", "signal_name"),
    cmd.RequestCancelExternalWorkflow: ("workflow_id", "run_id"),
    cmd.CompleteUpdate: ("update_id",),
    cmd.ContinueAsNew: ("workflow_type", "task_queue"),
    cmd.RecordMarker: ("marker_name",),
}
"""The fields of each command that name something (``limits.py``)."""

_DURATIONS: Final[dict[type[cmd.Command], tuple[str, ...]]] = {
    cmd.StartTimer: ("duration",),
    cmd.ScheduleActivity: (
        "schedule_to_close_timeout",
        "schedule_to_start_timeout",
        "start_to_close_timeout",
        "heartbeat_timeout",
    ),
    cmd.StartChildWorkflow: ("execution_timeout", "run_timeout"),
}
"""The duration fields of each command (``limits.MAX_DURATION``); retry policies too."""


def validate(commands: Sequence[cmd.Command]) -> None:
    """Reject a malformed command list; ``InvalidArgument`` names ``commands[i].<field>``."""
    for index, command in enumerate(commands):
        where = f"commands[{index}]"
        for name in _IDENTIFIERS.get(type(command), ()):
            limits.check_identifier(getattr(command, name), f"{where}.{name}")
        for name in _DURATIONS.get(type(command), ()):
            limits.check_duration(getattr(command, name), f"{where}.{name}")
        policy = getattr(command, "retry_policy", None)
        if policy is not None:
            check_retry_policy(policy, f"{where}.retry_policy")
        if type(command) in cmd.CLOSE_COMMAND_TYPES and index != len(commands) - 1:
            raise errors.InvalidArgument(
                f"{where}: {type(command).__name__} closes the workflow and must be the last "
                "command",
                field=where,
            )
        if isinstance(command, cmd.StartChildWorkflow):
            _require(command, where, "workflow_id", "workflow_type")
            if command.parent_close_policy not in _PARENT_CLOSE_POLICIES:
                raise errors.InvalidArgument(
                    f"{where}.parent_close_policy must be one of "
                    f"{', '.join(_PARENT_CLOSE_POLICIES)}",
                    field=f"{where}.parent_close_policy",
                )
            for name in ("execution_timeout", "run_timeout"):  # as a top-level start's
                value = getattr(command, name)
                if value is not None and value <= timedelta(0):
                    raise errors.InvalidArgument(
                        f"{where}.{name} must be positive", field=f"{where}.{name}"
                    )
        if isinstance(command, cmd.SignalExternalWorkflow):
            _require(command, where, "workflow_id", "signal_name")
        if isinstance(command, cmd.RequestCancelExternalWorkflow):
            _require(command, where, "workflow_id")
        if isinstance(command, cmd.CompleteUpdate):
            _require(command, where, "update_id")
            if command.result is not None and command.failure is not None:
                raise errors.InvalidArgument(
                    f"{where}: CompleteUpdate has both a result and a failure", field=where
                )
        if isinstance(command, cmd.StartTimer) and command.duration <= timedelta(0):
            raise errors.InvalidArgument(
                f"{where}.duration must be positive", field=f"{where}.duration"
            )
        if isinstance(command, cmd.ScheduleActivity):
            if not command.activity_type:
                raise errors.InvalidArgument(
                    f"{where}.activity_type is required", field=f"{where}.activity_type"
                )
            for name in (
                "schedule_to_close_timeout",
                "schedule_to_start_timeout",
                "start_to_close_timeout",
                "heartbeat_timeout",
            ):
                value = getattr(command, name)
                if value is not None and value <= timedelta(0):
                    raise errors.InvalidArgument(
                        f"{where}.{name} must be positive", field=f"{where}.{name}"
                    )


def check_retry_policy(policy: RetryPolicy, where: str) -> None:
    """``InvalidArgument`` when a retry policy's intervals exceed ``limits.MAX_DURATION``."""
    limits.check_duration(policy.initial_interval, f"{where}.initial_interval")
    limits.check_duration(policy.maximum_interval, f"{where}.maximum_interval")


def _require(command: cmd.Command, where: str, *names: str) -> None:
    for name in names:
        if not getattr(command, name):
            raise errors.InvalidArgument(f"{where}.{name} is required", field=f"{where}.{name}")


def has_close(commands: Sequence[cmd.Command]) -> bool:
    """Whether the commands close the run."""
    return any(type(c) in cmd.CLOSE_COMMAND_TYPES for c in commands)


def cancel_targets(state: WorkflowState, commands: Sequence[cmd.Command]) -> list[int]:
    """Scheduled event ids of pending activities that ``RequestCancelActivity`` commands name."""
    seqs = {c.seq for c in commands if isinstance(c, cmd.RequestCancelActivity)}
    return [sid for sid, act in state.pending_activities.items() if act.seq in seqs]


def to_events(
    state: WorkflowState,
    commands: Sequence[cmd.Command],
    *,
    completed_event_id: int,
    activities: dict[int, ActivityInfo],
    new_run_id: str,
    retry_run_id: str = "",
    config: ServerConfig,
) -> list[ev.EventAttributes]:
    """The command-events for ``commands``; the first gets id ``completed_event_id + 1``.

    ``new_run_id`` names the run a ``ContinueAsNew`` starts; ``retry_run_id``, when set, the
    run that retries this one after its ``FailWorkflow`` (``next_run.py``)."""
    out: list[ev.EventAttributes] = []
    wtc = completed_event_id
    timers = {t.seq: sid for sid, t in state.pending_timers.items()}
    updates = dict(state.pending_updates)
    acts = {a.seq: sid for sid, a in state.pending_activities.items() if not a.cancel_requested}
    fresh_activities: set[int] = set()

    def next_id() -> int:
        return completed_event_id + 1 + len(out)

    for command in commands:
        if isinstance(command, cmd.ScheduleActivity):
            acts[command.seq] = next_id()
            fresh_activities.add(next_id())
            out.append(_activity(state, command, wtc, config))
        elif isinstance(command, cmd.StartTimer):
            timers[command.seq] = next_id()
            out.append(
                ev.TimerStarted(
                    seq=command.seq,
                    duration=command.duration,
                    workflow_task_completed_event_id=wtc,
                    call_site=command.call_site,
                )
            )
        elif isinstance(command, cmd.CancelTimer):
            started = timers.pop(command.seq, None)
            if started is not None:  # else it fired meanwhile; the workflow will see TimerFired
                out.append(
                    ev.TimerCanceled(started_event_id=started, workflow_task_completed_event_id=wtc)
                )
        elif isinstance(command, cmd.RequestCancelActivity):
            sid = acts.pop(command.seq, None)
            if sid is None:  # already resolved (the workflow will see it) or already requested
                continue
            out.append(
                ev.ActivityCancelRequested(
                    scheduled_event_id=sid, workflow_task_completed_event_id=wtc
                )
            )
            info = activities.get(sid)
            if sid in fresh_activities or (info is not None and info.state != "started"):
                out.append(
                    ev.ActivityCanceled(scheduled_event_id=sid, attempt=info.attempt if info else 1)
                )
        elif isinstance(command, cmd.RecordMarker):
            out.append(
                ev.MarkerRecorded(
                    seq=command.seq,
                    marker_name=command.marker_name,
                    details=dict(command.details),
                    failure=command.failure,
                    workflow_task_completed_event_id=wtc,
                    call_site=command.call_site,
                )
            )
        elif isinstance(command, cmd.CompleteUpdate):
            accepted = updates.pop(command.update_id, None)
            if accepted is None:
                raise errors.InvalidArgument(
                    f"CompleteUpdate: update '{command.update_id}' is not pending in this run "
                    "(never accepted, or already completed)",
                    field="commands",
                )
            out.append(
                ev.UpdateCompleted(
                    update_id=command.update_id,
                    accepted_event_id=accepted,
                    result=command.result,
                    failure=command.failure,
                )
            )
        elif isinstance(command, cmd.CompleteWorkflow):
            out.append(
                ev.WorkflowCompleted(result=command.result, workflow_task_completed_event_id=wtc)
            )
        elif isinstance(command, cmd.FailWorkflow):
            out.append(
                ev.WorkflowFailed(
                    failure=command.failure,
                    workflow_task_completed_event_id=wtc,
                    new_run_id=retry_run_id,
                )
            )
        elif isinstance(command, cmd.CancelWorkflow):
            out.append(
                ev.WorkflowCanceled(details=command.details, workflow_task_completed_event_id=wtc)
            )
        elif isinstance(command, cmd.StartChildWorkflow):
            out.append(
                ev.ChildWorkflowInitiated(
                    seq=command.seq,
                    workflow_id=command.workflow_id,
                    workflow_type=command.workflow_type,
                    task_queue=command.task_queue or state.task_queue,
                    input=command.input,
                    parent_close_policy=command.parent_close_policy,
                    execution_timeout=command.execution_timeout,
                    run_timeout=command.run_timeout,
                    retry_policy=command.retry_policy,
                    workflow_task_completed_event_id=wtc,
                    call_site=command.call_site,
                )
            )
        elif isinstance(command, cmd.SignalExternalWorkflow):
            out.append(
                ev.ExternalSignalInitiated(
                    seq=command.seq,
                    workflow_id=command.workflow_id,
                    run_id=command.run_id,
                    signal_name=command.signal_name,
                    input=command.input,
                    workflow_task_completed_event_id=wtc,
                    call_site=command.call_site,
                )
            )
        elif isinstance(command, cmd.RequestCancelExternalWorkflow):
            out.append(
                ev.ExternalCancelInitiated(
                    seq=command.seq,
                    workflow_id=command.workflow_id,
                    run_id=command.run_id,
                    workflow_task_completed_event_id=wtc,
                )
            )
        elif isinstance(command, cmd.ContinueAsNew):
            out.append(
                ev.WorkflowContinuedAsNew(
                    new_run_id=new_run_id,
                    workflow_type=command.workflow_type or state.workflow_type,
                    task_queue=command.task_queue or state.task_queue,
                    input=command.input,
                    workflow_task_completed_event_id=wtc,
                )
            )
        else:  # validate() rejected the rest
            raise errors.InvalidArgument(f"{type(command).__name__} is not supported yet")
    return out


def _activity(
    state: WorkflowState, command: cmd.ScheduleActivity, wtc: int, config: ServerConfig
) -> ev.ActivityScheduled:
    start_to_close = (
        command.start_to_close_timeout
        or command.schedule_to_close_timeout
        or config.default_activity_start_to_close
    )
    return ev.ActivityScheduled(
        seq=command.seq,
        activity_id=command.activity_id or str(command.seq),
        activity_type=command.activity_type,
        task_queue=command.task_queue or state.task_queue,
        input=command.input,
        schedule_to_close_timeout=command.schedule_to_close_timeout,
        schedule_to_start_timeout=command.schedule_to_start_timeout,
        start_to_close_timeout=start_to_close,
        heartbeat_timeout=command.heartbeat_timeout,
        retry_policy=command.retry_policy or RetryPolicy(),
        workflow_task_completed_event_id=wtc,
        call_site=command.call_site,
    )
