"""The JSON codec: every attributes/command class round-trips; decode errors name the field;
retry-policy validation and semantics."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronicle.history import codec
from chronicle.history import commands as cm
from chronicle.history import events as ev
from chronicle.history.errors import InvalidCommandError, InvalidHistoryError
from chronicle.history.fold import fold
from chronicle.history.values import (
    CallSite,
    Failure,
    FailureKind,
    Payload,
    RetryPolicy,
    TimeoutType,
)
from tests.history.history_strategies import (
    NON_UTF8,
    aware_datetimes,
    failures,
    populated,
    retry_policies,
    values_of,
)

ATTRIBUTE_CLASSES = ev.ATTRIBUTE_CLASSES
COMMAND_CLASSES = cm.COMMAND_CLASSES


def _ids(classes: tuple[type[Any], ...]) -> list[str]:
    return [cls.__name__ for cls in classes]


# ---------------------------------------------------------------- registries


def test_registries_cover_every_class() -> None:
    assert len(ATTRIBUTE_CLASSES) == 35
    assert set(ev.ATTRIBUTES_BY_TYPE) == {cls.__name__ for cls in ATTRIBUTE_CLASSES}
    assert set(ev.EventType) == set(ev.ATTRIBUTES_BY_TYPE)
    assert len(COMMAND_CLASSES) == 13
    assert set(cm.COMMANDS_BY_TYPE) == {cls.__name__ for cls in COMMAND_CLASSES}
    assert (
        ev.COMMAND_EVENT_TYPES
        | {
            ev.WorkflowTerminated,
            ev.WorkflowTimedOut,
        }
        >= ev.CLOSE_EVENT_TYPES
    )


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("cls", ATTRIBUTE_CLASSES, ids=_ids(ATTRIBUTE_CLASSES))
def test_populated_attributes_round_trip(cls: type[Any]) -> None:
    value = populated(cls)
    encoded = codec.to_json(value)
    assert codec.decode_attributes(cls.__name__, encoded) == value
    assert codec.decode_attributes(cls.__name__, encoded.decode()) == value
    assert codec.decode_attributes(cls.__name__, json.loads(encoded)) == value
    assert codec.decode_attributes(cls.__name__, codec.to_jsonable(value)) == value


@pytest.mark.parametrize("cls", COMMAND_CLASSES, ids=_ids(COMMAND_CLASSES))
def test_populated_command_round_trip(cls: type[Any]) -> None:
    value = populated(cls)
    encoded = codec.to_json(value)
    assert codec.decode_command(cls.__name__, encoded) == value
    assert codec.decode_command(cls.__name__, json.loads(encoded)) == value


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(ATTRIBUTE_CLASSES).flatmap(values_of))
def test_generated_attributes_round_trip(value: Any) -> None:
    name = type(value).__name__
    assert codec.decode_attributes(name, codec.to_json(value)) == value
    assert codec.decode_attributes(name, codec.to_jsonable(value)) == value


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(COMMAND_CLASSES).flatmap(values_of))
def test_generated_command_round_trip(value: Any) -> None:
    assert codec.decode_command(type(value).__name__, codec.to_json(value)) == value


@settings(max_examples=60, deadline=None)
@given(failures)
def test_failure_cause_chain_round_trips(failure: Failure) -> None:
    attributes = ev.WorkflowFailed(failure=failure, workflow_task_completed_event_id=3)
    back = codec.decode_attributes("WorkflowFailed", codec.to_json(attributes))
    assert isinstance(back, ev.WorkflowFailed)
    assert back == attributes
    # Walk the chain explicitly: every level survives, not only the first.
    mine: Failure | None = failure
    theirs: Failure | None = back.failure
    while mine is not None:
        assert theirs is not None
        assert (theirs.message, theirs.kind, theirs.details) == (
            mine.message,
            mine.kind,
            mine.details,
        )
        mine, theirs = mine.cause, theirs.cause
    assert theirs is None


@pytest.mark.parametrize(
    "duration",
    [
        timedelta(microseconds=1),
        timedelta(seconds=1, microseconds=999999),
        timedelta(days=3649, hours=23, minutes=59, seconds=59, microseconds=999999),
        timedelta(hours=1, microseconds=1),
    ],
)
def test_duration_keeps_microseconds(duration: timedelta) -> None:
    command = cm.StartTimer(seq=1, duration=duration)
    assert json.loads(codec.to_json(command))["duration"] == duration.total_seconds()
    assert codec.decode_command("StartTimer", codec.to_json(command)) == command


@pytest.mark.parametrize(
    "cls", [*ATTRIBUTE_CLASSES, *COMMAND_CLASSES], ids=_ids((*ATTRIBUTE_CLASSES, *COMMAND_CLASSES))
)
def test_none_and_set_optionals_stay_distinct(cls: type[Any]) -> None:
    """Each optional field: None decodes as None, a set value as itself (never swapped)."""
    full = populated(cls)
    for f in dataclasses.fields(cls):
        if f.default is not None:
            continue
        cleared = dataclasses.replace(full, **{f.name: None})
        decode = codec.decode_attributes if cls in ATTRIBUTE_CLASSES else codec.decode_command
        back = decode(cls.__name__, codec.to_json(cleared))
        assert getattr(back, f.name) is None
        assert getattr(decode(cls.__name__, codec.to_json(full)), f.name) is not None


# ---------------------------------------------------------------- the documented JSON shape


def test_json_shape_of_payloads_durations_failures_and_enums() -> None:
    attributes = ev.ActivityScheduled(
        seq=2,
        activity_id="a-2",
        activity_type="charge",
        task_queue="q",
        input=(Payload(data=b'{"n":1}'), Payload(encoding="binary/plain", data=b"\xfb\xff")),
        start_to_close_timeout=timedelta(seconds=1, microseconds=500),
        retry_policy=RetryPolicy(maximum_attempts=3, non_retryable_error_types=("KeyError",)),
        workflow_task_completed_event_id=4,
    )
    assert codec.to_jsonable(attributes) == {
        "seq": 2,
        "activity_id": "a-2",
        "activity_type": "charge",
        "task_queue": "q",
        "input": [
            {"encoding": "json/plain", "data": "eyJuIjoxfQ=="},
            {"encoding": "binary/plain", "data": "-_8="},
        ],
        "schedule_to_close_timeout": None,
        "schedule_to_start_timeout": None,
        "start_to_close_timeout": 1.0005,
        "heartbeat_timeout": None,
        "retry_policy": {
            "initial_interval": 1.0,
            "backoff_coefficient": 2.0,
            "maximum_interval": None,
            "maximum_attempts": 3,
            "non_retryable_error_types": ["KeyError"],
        },
        "workflow_task_completed_event_id": 4,
        "call_site": None,
    }
    failure = Failure(
        message="late",
        kind=FailureKind.TIMEOUT,
        timeout_type=TimeoutType.HEARTBEAT,
        cause=Failure(message="root"),
    )
    assert codec.to_jsonable(failure) == {
        "message": "late",
        "type": "",
        "kind": "timeout",
        "stack": "",
        "non_retryable": False,
        "details": [],
        "timeout_type": "heartbeat",
        "cause": {
            "message": "root",
            "type": "",
            "kind": "application",
            "stack": "",
            "non_retryable": False,
            "details": [],
            "cause": None,
            "timeout_type": None,
        },
    }
    # to_json and to_jsonable agree.
    assert json.loads(codec.to_json(attributes)) == codec.to_jsonable(attributes)


def test_both_base64_alphabets_decode() -> None:
    """Writers emit the URL-safe alphabet; standard base64 (``+/``) is read too."""
    for text in ("-_8=", "+/8="):
        attributes = codec.decode_attributes(
            "SignalReceived", {"signal_name": "s", "input": [{"encoding": "x", "data": text}]}
        )
        assert isinstance(attributes, ev.SignalReceived)
        assert attributes.input[0].data == b"\xfb\xff"


def test_unknown_attribute_keys_are_ignored() -> None:
    """Forward compatibility within a format version: readers skip fields they do not know."""
    attributes = codec.decode_attributes("TimerFired", {"started_event_id": 5, "new_field": 1})
    assert attributes == ev.TimerFired(started_event_id=5)


# ---------------------------------------------------------------- events as dicts


@settings(max_examples=80, deadline=None)
@given(
    event_id=st.integers(1, 2**53),
    time=aware_datetimes,
    attributes=st.sampled_from(ATTRIBUTE_CLASSES).flatmap(values_of),
)
def test_event_dict_round_trip(event_id: int, time: datetime, attributes: Any) -> None:
    event = ev.Event(id=event_id, time=time, attributes=attributes)
    as_dict = codec.event_to_dict(event)
    assert set(as_dict) == {"id", "time", "type", "attributes"}
    assert as_dict["type"] == type(attributes).__name__
    assert json.loads(json.dumps(as_dict)) == as_dict  # plain JSON values only
    back = codec.event_from_dict(json.loads(json.dumps(as_dict)))
    assert back == event
    assert back.time.utcoffset() is not None


def test_event_time_is_exported_in_utc() -> None:
    """docs/history-format.md: ``time`` is ISO 8601 in UTC, whatever zone the datetime had."""
    plus_two = timezone(timedelta(hours=2))
    event = ev.Event(
        id=1,
        time=datetime(2024, 5, 1, 14, 0, 0, 250, tzinfo=plus_two),
        attributes=ev.TimerFired(started_event_id=1),
    )
    exported = codec.event_to_dict(event)["time"]
    assert exported in ("2024-05-01T12:00:00.000250+00:00", "2024-05-01T12:00:00.000250Z")


def test_event_from_dict_rejects_a_time_without_offset() -> None:
    """A naive time would later be compared with aware ones (timer deadlines) and crash."""
    with pytest.raises(InvalidHistoryError, match="time"):
        codec.event_from_dict(
            {
                "id": 1,
                "time": "2024-05-01T12:00:00",
                "type": "TimerFired",
                "attributes": {"started_event_id": 1},
            }
        )


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (
            {
                "time": "2024-01-01T00:00:00+00:00",
                "type": "TimerFired",
                "attributes": {"started_event_id": 1},
            },
            "id",
        ),
        ({"id": 1, "type": "TimerFired", "attributes": {"started_event_id": 1}}, "time"),
        (
            {
                "id": 1,
                "time": "yesterday",
                "type": "TimerFired",
                "attributes": {"started_event_id": 1},
            },
            "yesterday",
        ),
        (
            {"id": 1, "time": "2024-01-01T00:00:00+00:00", "type": "TimerFired", "attributes": [1]},
            "attributes must be an object",
        ),
        (
            {
                "id": 1,
                "time": "2024-01-01T00:00:00+00:00",
                "type": "TimerExploded",
                "attributes": {},
            },
            "TimerExploded",
        ),
        (
            {"id": 1, "time": "2024-01-01T00:00:00+00:00", "type": "TimerFired", "attributes": {}},
            "started_event_id",
        ),
    ],
    ids=["no-id", "no-time", "bad-time", "attributes-not-object", "unknown-type", "no-field"],
)
def test_event_from_dict_errors(data: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidHistoryError, match=needle):
        codec.event_from_dict(data)


# ---------------------------------------------------------------- decode errors


def test_unknown_event_type() -> None:
    with pytest.raises(InvalidHistoryError, match="unknown event type 'ActivityExploded'"):
        codec.decode_attributes("ActivityExploded", {})


def test_unknown_command_type_names_the_type_field() -> None:
    with pytest.raises(InvalidCommandError, match="unknown command type 'Explode'") as info:
        codec.decode_command("Explode", {})
    assert info.value.field == "command_type"
    assert "StartTimer" in str(info.value)  # lists the known ones


@pytest.mark.parametrize(
    ("event_type", "data", "field"),
    [
        ("TimerFired", {"started_event_id": "seven"}, "started_event_id"),
        ("TimerFired", {}, "started_event_id"),
        ("TimerStarted", {"seq": 1, "duration": "soon"}, "duration"),
        ("ActivityFailed", {"scheduled_event_id": 3}, "failure"),
        (
            "ActivityFailed",
            {"scheduled_event_id": 3, "failure": {"message": "m", "kind": "oops"}},
            "failure.kind",
        ),
        (
            "WorkflowFailed",
            {"failure": {"message": "m", "cause": {"kind": "timeout"}}},
            "failure.cause.message",
        ),
        ("SignalReceived", {"signal_name": "s", "input": [{"data": 5}]}, "input.0.data"),
        ("WorkflowStarted", {"workflow_type": "w"}, "task_queue"),
    ],
)
def test_bad_attributes_name_the_field(event_type: str, data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidHistoryError) as info:
        codec.decode_attributes(event_type, data)
    assert f"{event_type} attributes: {field}:" in str(info.value)


@pytest.mark.parametrize(
    ("command_type", "data", "field"),
    [
        ("StartTimer", {"seq": "x", "duration": 1}, "seq"),
        ("StartTimer", {"seq": 1}, "duration"),
        ("ScheduleActivity", {"seq": 1, "activity_type": "t"}, "activity_id"),
        (
            "ScheduleActivity",
            {
                "seq": 1,
                "activity_id": "a",
                "activity_type": "t",
                "input": [{"encoding": "x", "data": 5}],
            },
            "input.0.data",
        ),
        (
            "ScheduleActivity",
            {
                "seq": 1,
                "activity_id": "a",
                "activity_type": "t",
                "retry_policy": {"maximum_attempts": "many"},
            },
            "retry_policy.maximum_attempts",
        ),
        (
            "FailWorkflow",
            {"failure": {"message": "m", "cause": {"message": 1}}},
            "failure.cause.message",
        ),
        ("RecordMarker", {"seq": 1, "marker_name": "m", "details": {"k": "v"}}, "details.k"),
    ],
)
def test_bad_command_names_the_field(command_type: str, data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidCommandError) as info:
        codec.decode_command(command_type, data)
    assert info.value.field == field
    assert str(info.value).startswith(f"{command_type}: {field}:")


def test_invalid_json_text() -> None:
    with pytest.raises(InvalidCommandError, match="Invalid JSON") as info:
        codec.decode_command("StartTimer", b"{not json")
    assert info.value.field == ""
    with pytest.raises(InvalidHistoryError, match="Invalid JSON"):
        codec.decode_attributes("TimerFired", b"[")


@pytest.mark.parametrize(
    ("policy", "named"),
    [
        ({"initial_interval": -1}, "initial_interval"),
        ({"initial_interval": 0}, "initial_interval"),
        ({"backoff_coefficient": 0.5}, "backoff_coefficient"),
        ({"maximum_interval": 0.5}, "maximum_interval"),
        ({"maximum_attempts": -1}, "maximum_attempts"),
    ],
)
def test_invalid_retry_policy_in_a_command_or_event(policy: dict[str, Any], named: str) -> None:
    base = {"seq": 1, "activity_id": "a", "activity_type": "t", "retry_policy": policy}
    with pytest.raises(InvalidCommandError, match=f"RetryPolicy.{named} must be") as info:
        codec.decode_command("ScheduleActivity", base)
    assert info.value.field.startswith("retry_policy")
    with pytest.raises(InvalidHistoryError, match=f"RetryPolicy.{named} must be"):
        codec.decode_attributes("ActivityScheduled", {**base, "task_queue": "q"})


# ---------------------------------------------------------------- RetryPolicy


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"initial_interval": timedelta(seconds=-1)}, "initial_interval"),
        ({"initial_interval": timedelta(0)}, "initial_interval"),
        ({"backoff_coefficient": 0.99}, "backoff_coefficient"),
        ({"backoff_coefficient": 0.0}, "backoff_coefficient"),
        (
            {"initial_interval": timedelta(seconds=2), "maximum_interval": timedelta(seconds=1)},
            "maximum_interval",
        ),
        ({"maximum_attempts": -1}, "maximum_attempts"),
    ],
)
def test_retry_policy_validation(kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=f"RetryPolicy.{named} must be"):
        RetryPolicy(**kwargs)


def test_retry_policy_boundaries_are_valid() -> None:
    RetryPolicy(backoff_coefficient=1.0)
    RetryPolicy(initial_interval=timedelta(microseconds=1))
    RetryPolicy(initial_interval=timedelta(seconds=3), maximum_interval=timedelta(seconds=3))
    RetryPolicy(maximum_attempts=0)


def test_retry_policy_temporal_defaults() -> None:
    policy = RetryPolicy()
    assert policy.initial_interval == timedelta(seconds=1)
    assert policy.backoff_coefficient == 2.0
    assert policy.maximum_attempts == 0
    assert policy.effective_maximum_interval() == timedelta(seconds=100)
    assert [policy.backoff(n).total_seconds() for n in range(1, 10)] == [
        1,
        2,
        4,
        8,
        16,
        32,
        64,
        100,
        100,
    ]


def test_backoff_with_explicit_cap_and_coefficient() -> None:
    policy = RetryPolicy(
        initial_interval=timedelta(milliseconds=200),
        backoff_coefficient=3,
        maximum_interval=timedelta(seconds=5),
    )
    assert policy.effective_maximum_interval() == timedelta(seconds=5)
    assert [policy.backoff(n) for n in (1, 2, 3, 4, 5)] == [
        timedelta(milliseconds=200),
        timedelta(milliseconds=600),
        timedelta(milliseconds=1800),
        timedelta(milliseconds=5000),
        timedelta(milliseconds=5000),
    ]
    constant = RetryPolicy(initial_interval=timedelta(seconds=7), backoff_coefficient=1)
    assert {constant.backoff(n) for n in range(1, 50)} == {timedelta(seconds=7)}


@settings(max_examples=100, deadline=None)
@given(policy=retry_policies(), attempt=st.integers(1, 200))
def test_backoff_is_monotonic_and_capped(policy: RetryPolicy, attempt: int) -> None:
    cap = policy.effective_maximum_interval()
    delay = policy.backoff(attempt)
    assert policy.initial_interval <= delay <= cap
    assert policy.backoff(attempt + 1) >= delay


@pytest.mark.parametrize("attempt", [47, 48, 60, 1100, 10**6])
def test_backoff_of_a_long_retrying_activity_stays_at_the_cap(attempt: int) -> None:
    """Unlimited attempts is the default: attempt 48 comes after ~75 min of 100 s retries."""
    assert RetryPolicy().backoff(attempt) == timedelta(seconds=100)


def test_allows_retry_by_attempts() -> None:
    failure = Failure(message="m", type="IOError")
    unlimited = RetryPolicy()
    assert all(unlimited.allows_retry(n, failure) for n in (1, 2, 100, 10**6))
    three = RetryPolicy(maximum_attempts=3)
    assert [three.allows_retry(n, failure) for n in (1, 2, 3, 4)] == [True, True, False, False]
    once = RetryPolicy(maximum_attempts=1)
    assert not once.allows_retry(1, failure)


def test_allows_retry_by_error_type_and_flag() -> None:
    policy = RetryPolicy(non_retryable_error_types=("ValueError", "auth.Denied"))
    assert not policy.allows_retry(1, Failure(message="m", type="ValueError"))
    assert not policy.allows_retry(1, Failure(message="m", type="auth.Denied"))
    # By exact class name: neither a subclass name nor a cause's type matches.
    assert policy.allows_retry(1, Failure(message="m", type="UnicodeDecodeError"))
    assert policy.allows_retry(
        1, Failure(message="m", type="RuntimeError", cause=Failure(message="c", type="ValueError"))
    )
    assert not RetryPolicy().allows_retry(1, Failure(message="m", non_retryable=True))


# ---------------------------------------------------------------- state snapshots


def test_state_snapshot_round_trip_with_pending_everything() -> None:
    from chronicle.history.state import (
        PendingActivity,
        PendingChild,
        PendingExternal,
        PendingTimer,
        RunStatus,
        WorkflowState,
        WorkflowTaskState,
    )

    when = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    state = WorkflowState(
        next_event_id=20,
        status=RunStatus.RUNNING,
        workflow_type="wf",
        task_queue="q",
        workflow_task_timeout=timedelta(seconds=3, microseconds=1),
        start_time=when,
        workflow_task=WorkflowTaskState(
            scheduled_event_id=18, task_queue="q", attempt=2, started_event_id=19
        ),
        last_completed_started_event_id=9,
        last_workflow_visible_event_id=17,
        workflow_task_failures=1,
        cancel_requested=True,
        pending_activities={
            5: PendingActivity(
                scheduled_event_id=5,
                seq=1,
                activity_id="a",
                activity_type="t",
                task_queue="q",
                cancel_requested=True,
            )
        },
        pending_timers={
            6: PendingTimer(started_event_id=6, seq=1, fire_at=when + timedelta(microseconds=3))
        },
        pending_children={
            7: PendingChild(
                initiated_event_id=7, seq=1, workflow_id="c", workflow_type="k", run_id="r"
            )
        },
        pending_externals={
            8: PendingExternal(initiated_event_id=8, seq=1, kind="signal", workflow_id="o")
        },
        pending_updates={"u-1": 11},
    )
    assert codec.state_from_json(codec.state_to_json(state)) == state


def test_non_utf8_payload_survives_every_path() -> None:
    payload = Payload(encoding="binary/plain", data=NON_UTF8)
    command = cm.CompleteWorkflow(result=payload)
    assert codec.decode_command("CompleteWorkflow", codec.to_json(command)) == command
    event = ev.Event(
        id=9, time=datetime(2024, 1, 1, tzinfo=UTC), attributes=ev.WorkflowCompleted(result=payload)
    )
    assert codec.event_from_dict(json.loads(json.dumps(codec.event_to_dict(event)))) == event


# ---------------------------------------------------------------- docs/history-format.md

FORMAT_DOC = Path(__file__).resolve().parents[2] / "docs" / "history-format.md"


def test_documented_example_is_what_the_codec_writes() -> None:
    text = FORMAT_DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)
    document = json.loads(next(b for b in reversed(blocks) if '"events"' in b))
    assert (document["format"], document["version"]) == ("chronicle-history", 1)
    events = [codec.event_from_dict(item) for item in document["events"]]
    assert [codec.event_to_dict(e) for e in events] == document["events"]
    state = fold(events)
    assert state.needs_workflow_task
    assert state.pending_activities == {}


_DOCUMENTED = (*ATTRIBUTE_CLASSES, Payload, Failure, RetryPolicy, CallSite, ev.ParentRef)


@pytest.mark.parametrize("cls", _DOCUMENTED, ids=_ids(_DOCUMENTED))
def test_format_doc_lists_every_type_and_field(cls: type[Any]) -> None:
    rows = [
        line
        for line in FORMAT_DOC.read_text(encoding="utf-8").splitlines()
        if line.startswith(f"| `{cls.__name__}` |")
    ]
    assert len(rows) == 1, f"docs/history-format.md: no table row for {cls.__name__}"
    documented = set(re.findall(r"`(\w+)`: ", rows[0]))
    assert documented == {f.name for f in dataclasses.fields(cls)}


def test_utc_written_as_z_is_read() -> None:
    event = codec.event_from_dict(
        {
            "id": 1,
            "time": "2024-03-01T12:00:00.5Z",
            "type": "TimerFired",
            "attributes": {"started_event_id": 1},
        }
    )
    assert event.time == datetime(2024, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)
