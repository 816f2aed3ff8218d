"""Hypothesis strategies for the history layer, shared by the tests in this directory.

``values_of(cls)`` builds any events/commands/values dataclass with *every* field drawn (not only
the required ones), from the dataclass's own type hints, so a field added later is covered
without touching the tests. ``populated(cls)`` is a deterministic instance whose every field
differs from its default. ``histories()`` generates valid histories (see its docstring).
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from chronicle.history import events as ev
from chronicle.history.values import (
    CallSite,
    Failure,
    FailureKind,
    Payload,
    RetryPolicy,
    TimeoutType,
)

# ---------------------------------------------------------------- leaf values

NON_UTF8 = b"\xff\xfe\x00\x80binary"

texts = st.text(max_size=12)
binaries = st.binary(max_size=16) | st.just(NON_UTF8)
ints = st.integers(min_value=-(2**31), max_value=2**53)
# Up to ten years, microseconds included: JSON float seconds keep them exactly in that range.
durations = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3650))
positive_durations = st.timedeltas(
    min_value=timedelta(microseconds=1), max_value=timedelta(days=3650)
)
aware_datetimes = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    ),
)
utc_datetimes = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)

payloads = st.builds(
    Payload,
    encoding=st.sampled_from(["json/plain", "binary/plain", "x/enc"]) | texts,
    data=binaries,
)
payload_tuples = st.lists(payloads, max_size=3).map(tuple)


def _failure(cause: st.SearchStrategy[Failure | None]) -> st.SearchStrategy[Failure]:
    return st.builds(
        Failure,
        message=texts,
        type=texts,
        kind=st.sampled_from(FailureKind),
        stack=texts,
        non_retryable=st.booleans(),
        details=payload_tuples,
        cause=cause,
        timeout_type=st.none() | st.sampled_from(TimeoutType),
    )


failures: st.SearchStrategy[Failure] = st.recursive(_failure(st.none()), _failure, max_leaves=4)
"""Failures with cause chains of random depth."""


@st.composite
def retry_policies(draw: st.DrawFn) -> RetryPolicy:
    """Valid retry policies, every field drawn."""
    initial = draw(st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=36)))
    maximum = draw(st.none() | st.timedeltas(min_value=initial, max_value=initial * 100))
    return RetryPolicy(
        initial_interval=initial,
        backoff_coefficient=draw(st.floats(min_value=1.0, max_value=1000.0)),
        maximum_interval=maximum,
        maximum_attempts=draw(st.integers(min_value=0, max_value=2**31 - 1)),
        non_retryable_error_types=tuple(draw(st.lists(texts, max_size=3))),
    )


_SPECIAL: dict[Any, st.SearchStrategy[Any]] = {
    int: ints,
    str: texts,
    bytes: binaries,
    bool: st.booleans(),
    timedelta: durations,
    datetime: utc_datetimes,
    Payload: payloads,
    Failure: failures,
    RetryPolicy: retry_policies(),
}


def strategy_for(hint: Any) -> st.SearchStrategy[Any]:
    """A strategy for a type hint of a history dataclass field."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        inner = st.one_of(*(strategy_for(a) for a in args if a is not type(None)))
        return st.none() | inner if type(None) in args else inner
    if origin is tuple:
        item, _ellipsis = typing.get_args(hint)
        return st.lists(strategy_for(item), max_size=3).map(tuple)
    if origin is dict:
        key, value = typing.get_args(hint)
        return st.dictionaries(strategy_for(key), strategy_for(value), max_size=3)
    if hint in _SPECIAL:
        return _SPECIAL[hint]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return st.sampled_from(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return values_of(hint)
    raise TypeError(f"no strategy for {hint!r}: extend history_strategies.strategy_for")


def values_of(cls: type[Any]) -> st.SearchStrategy[Any]:
    """Instances of ``cls`` with every field (required or defaulted) drawn."""
    if cls in _SPECIAL:
        return _SPECIAL[cls]
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(cls)})


# ---------------------------------------------------------------- deterministic, all fields set

_DEEP_FAILURE = Failure(
    message="outer ü",
    type="ValueError",
    kind=FailureKind.ACTIVITY,
    stack="Traceback …",
    non_retryable=True,
    details=(Payload(encoding="binary/plain", data=NON_UTF8),),
    timeout_type=TimeoutType.HEARTBEAT,
    cause=Failure(
        message="middle",
        type="TimeoutError",
        kind=FailureKind.TIMEOUT,
        timeout_type=TimeoutType.START_TO_CLOSE,
        cause=Failure(message="root", type="KeyError", details=(Payload(data=b'"k"'),)),
    ),
)


def _populated_value(hint: Any, default: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = (a for a in typing.get_args(hint) if a is not type(None))
        return _populated_value(inner, None)
    if origin is tuple:
        item, _ellipsis = typing.get_args(hint)
        return (_populated_value(item, None), _populated_value(item, None))
    if origin is dict:
        _key, value = typing.get_args(hint)
        return {"k1": _populated_value(value, None), "ключ": _populated_value(value, None)}
    simple: dict[Any, Any] = {
        int: 4242,
        str: "non-default ✓",
        bytes: NON_UTF8,
        bool: not default if isinstance(default, bool) else True,
        timedelta: timedelta(days=2, seconds=3, microseconds=456789),
        datetime: datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC),
        Payload: Payload(encoding="binary/plain", data=NON_UTF8),
        Failure: _DEEP_FAILURE,
        RetryPolicy: RetryPolicy(
            initial_interval=timedelta(seconds=2, microseconds=5),
            backoff_coefficient=1.5,
            maximum_interval=timedelta(minutes=3, microseconds=7),
            maximum_attempts=9,
            non_retryable_error_types=("ValueError",),
        ),
        CallSite: CallSite(file="wf.py", line=12, function="run"),
    }
    if hint in simple:
        return simple[hint]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return next(m for m in reversed(list(hint)) if m != default)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return populated(hint)
    raise TypeError(f"no populated value for {hint!r}")


def _default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def populated(cls: type[Any]) -> Any:
    """An instance of ``cls`` in which every field differs from its default."""
    hints = typing.get_type_hints(cls)
    kwargs = {
        f.name: _populated_value(hints[f.name], _default_of(f)) for f in dataclasses.fields(cls)
    }
    for f in dataclasses.fields(cls):
        assert kwargs[f.name] != _default_of(f), f"{cls.__name__}.{f.name} left at its default"
    return cls(**kwargs)


# ---------------------------------------------------------------- valid histories

VISIBLE_TYPES: tuple[type[Any], ...] = (
    ev.WorkflowStarted,
    ev.WorkflowCancelRequested,
    ev.ActivityCompleted,
    ev.ActivityFailed,
    ev.ActivityTimedOut,
    ev.ActivityCanceled,
    ev.TimerFired,
    ev.SignalReceived,
    ev.UpdateAccepted,
    ev.ChildWorkflowStarted,
    ev.ChildWorkflowStartFailed,
    ev.ChildWorkflowCompleted,
    ev.ChildWorkflowFailed,
    ev.ExternalSignalResolved,
    ev.ExternalCancelResolved,
)
"""Events the workflow code reacts to (they make a workflow task due)."""

ACTIVITY_ANSWERS = (
    ev.ActivityCompleted,
    ev.ActivityFailed,
    ev.ActivityTimedOut,
    ev.ActivityCanceled,
)
CHILD_CLOSES = (ev.ChildWorkflowStartFailed, ev.ChildWorkflowCompleted, ev.ChildWorkflowFailed)
TASK_ENDS = (ev.WorkflowTaskCompleted, ev.WorkflowTaskFailed, ev.WorkflowTaskTimedOut)

START_TIME = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
_FAILURE = Failure(message="boom", type="RuntimeError")


class _HistoryBuilder:
    """The generator's own bookkeeping: what is pending, so it only emits legal events."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.events: list[ev.Event] = []
        self.time = START_TIME
        self._closed = False
        self.task: tuple[int, int] | None = None  # (scheduled id, started id or 0)
        self.activities: dict[int, bool] = {}  # scheduled id -> cancel requested
        self.timers: set[int] = set()
        self.children: dict[int, bool] = {}  # initiated id -> started
        self.externals: set[int] = set()
        self.updates: set[str] = set()
        self.seqs: dict[str, int] = {}
        self.counter = 0

    def add(self, attributes: ev.EventAttributes) -> int:
        self.time += timedelta(microseconds=self.draw(st.integers(0, 90_000_000)))
        event_id = len(self.events) + 1
        self.events.append(ev.Event(id=event_id, time=self.time, attributes=attributes))
        if type(attributes) in ev.CLOSE_EVENT_TYPES:
            self._closed = True
        return event_id

    def is_closed(self) -> bool:
        return self._closed

    def seq(self, kind: str) -> int:
        self.seqs[kind] = self.seqs.get(kind, 0) + 1
        return self.seqs[kind]

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    # -- actions; each is only offered when legal

    def actions(self) -> list[str]:
        found = ["task", "task", "outside"]
        if self._resolutions():
            found += ["resolve", "resolve"]
        return found

    def _resolutions(self) -> list[str]:
        found: list[str] = []
        if any(not started for started in self.children.values()):
            found.append("child_started")
        if self.children:
            found.append("child_closed")
        if self.activities:
            found.append("answer_activity")
        if self.timers:
            found.append("fire_timer")
        if self.externals:
            found.append("external_resolved")
        return found

    def step(self, action: str) -> None:
        getattr(self, f"_{action}")()

    def _task(self) -> None:
        if self.task is None:
            self._schedule_task()
        elif self.task[1] == 0:
            self._start_task()
        else:
            ends = ["complete_task", "fail_task", "complete_task", "timeout_task"]
            self.step(self.draw(st.sampled_from(ends)))

    def _resolve(self) -> None:
        self.step(self.draw(st.sampled_from(self._resolutions())))

    def _outside(self) -> None:
        getattr(self, self.draw(st.sampled_from(["_signal", "_update", "_cancel_request"])))()

    def _signal(self) -> None:
        self.add(ev.SignalReceived(signal_name=self.draw(st.sampled_from(["go", "stop"]))))

    def _cancel_request(self) -> None:
        self.add(ev.WorkflowCancelRequested(reason="asked"))

    def _update(self) -> None:
        update_id = self.fresh("update")
        self.updates.add(update_id)
        self.add(ev.UpdateAccepted(update_id=update_id, update_name="set"))

    def _schedule_task(self) -> None:
        self.task = (self.add(ev.WorkflowTaskScheduled(task_queue="q")), 0)

    def _start_task(self) -> None:
        assert self.task is not None
        scheduled = self.task[0]
        self.task = (scheduled, self.add(ev.WorkflowTaskStarted(scheduled_event_id=scheduled)))

    def _fail_task(self) -> None:
        assert self.task is not None
        self.add(
            ev.WorkflowTaskFailed(
                scheduled_event_id=self.task[0], started_event_id=self.task[1], failure=_FAILURE
            )
        )
        self.task = None

    def _timeout_task(self) -> None:
        assert self.task is not None
        self.add(
            ev.WorkflowTaskTimedOut(scheduled_event_id=self.task[0], started_event_id=self.task[1])
        )
        self.task = None

    def _complete_task(self) -> None:
        assert self.task is not None
        completed = self.add(
            ev.WorkflowTaskCompleted(scheduled_event_id=self.task[0], started_event_id=self.task[1])
        )
        self.task = None
        # Hypothesis favours the first options of ``sampled_from``: the rarer ones go first.
        kinds: list[str] = []
        if any(not cancel for cancel in self.activities.values()):
            kinds += ["cancel_activity"]
        if self.timers:
            kinds += ["cancel_timer"]
        if self.updates:
            kinds += ["complete_update"]
        kinds += ["child", "activity", "timer", "marker", "external_signal", "external_cancel"]
        for kind in self.draw(
            st.lists(st.sampled_from(kinds), min_size=1, max_size=4) | st.just([])
        ):
            self._command(kind, completed)
        if self.draw(st.integers(0, 19)) == 7:  # ~1 in 20 (Hypothesis favours the ends)
            closes: list[ev.EventAttributes] = [
                ev.WorkflowCompleted(
                    result=Payload(data=b"1"), workflow_task_completed_event_id=completed
                ),
                ev.WorkflowFailed(failure=_FAILURE, workflow_task_completed_event_id=completed),
                ev.WorkflowCanceled(workflow_task_completed_event_id=completed),
                ev.WorkflowContinuedAsNew(
                    new_run_id="run-2",
                    workflow_type="wf",
                    task_queue="q",
                    workflow_task_completed_event_id=completed,
                ),
            ]
            self.add(self.draw(st.sampled_from(closes)))

    def _command(self, kind: str, completed: int) -> None:
        if kind == "activity":
            self.activities[
                self.add(
                    ev.ActivityScheduled(
                        seq=self.seq("activity"),
                        activity_id=self.fresh("act"),
                        activity_type=self.draw(st.sampled_from(["charge", "ship"])),
                        task_queue="q",
                        workflow_task_completed_event_id=completed,
                    )
                )
            ] = False
        elif kind == "timer":
            duration = timedelta(microseconds=self.draw(st.integers(1, 10**11)))
            self.timers.add(
                self.add(
                    ev.TimerStarted(
                        seq=self.seq("timer"),
                        duration=duration,
                        workflow_task_completed_event_id=completed,
                    )
                )
            )
        elif kind == "marker":
            self.add(
                ev.MarkerRecorded(
                    seq=self.seq("marker"),
                    marker_name="patch",
                    workflow_task_completed_event_id=completed,
                )
            )
        elif kind == "child":
            self.children[
                self.add(
                    ev.ChildWorkflowInitiated(
                        seq=self.seq("child"),
                        workflow_id=self.fresh("child"),
                        workflow_type="kid",
                        task_queue="q",
                        workflow_task_completed_event_id=completed,
                    )
                )
            ] = False
        elif kind in ("external_signal", "external_cancel"):
            attributes: ev.EventAttributes
            if kind == "external_signal":
                attributes = ev.ExternalSignalInitiated(
                    seq=self.seq(kind),
                    workflow_id="other",
                    signal_name="poke",
                    workflow_task_completed_event_id=completed,
                )
            else:
                attributes = ev.ExternalCancelInitiated(
                    seq=self.seq(kind),
                    workflow_id="other",
                    workflow_task_completed_event_id=completed,
                )
            self.externals.add(self.add(attributes))
        elif kind == "cancel_activity":
            candidates = sorted(i for i, cancel in self.activities.items() if not cancel)
            if candidates:
                target = self.draw(st.sampled_from(candidates))
                self.activities[target] = True
                self.add(
                    ev.ActivityCancelRequested(
                        scheduled_event_id=target, workflow_task_completed_event_id=completed
                    )
                )
        elif kind == "cancel_timer":
            if self.timers:
                target = self.draw(st.sampled_from(sorted(self.timers)))
                self.timers.discard(target)
                self.add(
                    ev.TimerCanceled(
                        started_event_id=target, workflow_task_completed_event_id=completed
                    )
                )
        elif kind == "complete_update" and self.updates:
            update_id = self.draw(st.sampled_from(sorted(self.updates)))
            self.updates.discard(update_id)
            accepted = next(
                e.id
                for e in self.events
                if isinstance(e.attributes, ev.UpdateAccepted)
                and e.attributes.update_id == update_id
            )
            self.add(
                ev.UpdateCompleted(
                    update_id=update_id, accepted_event_id=accepted, result=Payload(data=b"true")
                )
            )

    def _answer_activity(self) -> None:
        target = self.draw(st.sampled_from(sorted(self.activities)))
        options: list[ev.EventAttributes] = [
            ev.ActivityCompleted(scheduled_event_id=target, result=Payload(data=b'"ok"')),
            ev.ActivityFailed(scheduled_event_id=target, failure=_FAILURE, attempt=3),
            ev.ActivityTimedOut(scheduled_event_id=target, failure=_FAILURE),
        ]
        cancel_requested = self.activities.pop(target)
        if cancel_requested and self.draw(st.booleans()):
            self.add(ev.ActivityCanceled(scheduled_event_id=target, details=(Payload(),)))
        else:
            self.add(self.draw(st.sampled_from(options)))

    def _fire_timer(self) -> None:
        target = self.draw(st.sampled_from(sorted(self.timers)))
        self.timers.discard(target)
        self.add(ev.TimerFired(started_event_id=target))

    def _child_started(self) -> None:
        target = self.draw(st.sampled_from(sorted(i for i, s in self.children.items() if not s)))
        self.children[target] = True
        self.add(ev.ChildWorkflowStarted(initiated_event_id=target, run_id=self.fresh("run")))

    def _child_closed(self) -> None:
        target = self.draw(st.sampled_from(sorted(self.children)))
        started = self.children.pop(target)
        if started:
            if self.draw(st.booleans()):
                self.add(ev.ChildWorkflowFailed(initiated_event_id=target, failure=_FAILURE))
            else:
                self.add(ev.ChildWorkflowCompleted(initiated_event_id=target, result=Payload()))
        else:
            self.add(ev.ChildWorkflowStartFailed(initiated_event_id=target, failure=_FAILURE))

    def _external_resolved(self) -> None:
        target = self.draw(st.sampled_from(sorted(self.externals)))
        self.externals.discard(target)
        kind = type(self.events[target - 1].attributes)
        failure = self.draw(st.none() | st.just(_FAILURE))
        if kind is ev.ExternalSignalInitiated:
            self.add(ev.ExternalSignalResolved(initiated_event_id=target, failure=failure))
        else:
            self.add(ev.ExternalCancelResolved(initiated_event_id=target, failure=failure))

    def close_from_outside(self) -> None:
        closes: list[ev.EventAttributes] = [
            ev.WorkflowTerminated(reason="ops"),
            ev.WorkflowTimedOut(timeout="execution"),
        ]
        self.add(self.draw(st.sampled_from(closes)))


@st.composite
def histories(
    draw: st.DrawFn, *, max_steps: int = 40, closed: bool | None = None
) -> list[ev.Event]:
    """Valid histories: ``WorkflowStarted``, then random legal steps.

    A step schedules, starts, completes (with random command-events: activities, timers,
    markers, children, external signals/cancels, activity and timer cancels, update
    completions, sometimes a close), fails or times out a workflow task; answers a pending
    activity, fires a timer, resolves a child or external request; or records a signal, a
    cancel request or an accepted update. Other events interleave freely with a started task.
    ``closed``: True forces a closed run, False an open one, None either.
    """
    builder = _HistoryBuilder(draw)
    builder.add(
        ev.WorkflowStarted(
            workflow_type="wf",
            task_queue="q",
            workflow_task_timeout=timedelta(seconds=7),
            input=(Payload(data=b"[1]"),),
        )
    )
    for _ in range(draw(st.integers(0, max_steps) | st.just(max_steps))):
        if builder.is_closed():
            break
        builder.step(draw(st.sampled_from(builder.actions())))
        rare_close = draw(st.integers(0, 49)) == 17  # ~2 %: terminated or timed out mid-run
        if rare_close and not builder.is_closed():
            builder.close_from_outside()
        if closed is False and builder.is_closed():
            builder.events.pop()  # keep the run open: drop the close just added
            builder._closed = False
    if closed and not builder.is_closed():
        builder.close_from_outside()
    return builder.events
