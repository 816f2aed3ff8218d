"""The proto bridge: events, commands, payloads, failures, retry policies, durations and
timestamps survive the v1 messages; bad commands are named ``commands[i].field``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from chronicle.history import codec, wire
from chronicle.history import commands as cm
from chronicle.history import events as ev
from chronicle.history.errors import InvalidCommandError, InvalidHistoryError
from chronicle.history.values import Failure, FailureKind, Payload, RetryPolicy, TimeoutType
from chronicle.protos.v1 import command_pb2, common_pb2, history_pb2, service_pb2
from tests.history.history_strategies import (
    NON_UTF8,
    aware_datetimes,
    failures,
    histories,
    payloads,
    populated,
    retry_policies,
    values_of,
)

WIRE_SETTINGS = settings(max_examples=40, deadline=None)


def _through_bytes(message: Any) -> Any:
    """Serialize and parse again, as a real RPC does."""
    return type(message).FromString(message.SerializeToString())


# ---------------------------------------------------------------- values


@WIRE_SETTINGS
@given(st.lists(payloads, max_size=4))
def test_payloads_round_trip(items: list[Payload]) -> None:
    messages = [_through_bytes(m) for m in wire.payloads_to_proto(items)]
    assert wire.payloads_from_proto(messages) == tuple(items)


def test_non_utf8_payload_bytes_are_kept_verbatim() -> None:
    message = _through_bytes(wire.payload_to_proto(Payload(encoding="binary/plain", data=NON_UTF8)))
    assert message.data == NON_UTF8
    assert wire.payload_from_proto(message) == Payload(encoding="binary/plain", data=NON_UTF8)


def test_optional_payload() -> None:
    empty = service_pb2.QueryWorkflowResponse()
    assert wire.optional_payload_from_proto(empty, "result") is None
    # A set-but-empty payload is not "unset".
    present = service_pb2.QueryWorkflowResponse(result=common_pb2.Payload())
    assert wire.optional_payload_from_proto(_through_bytes(present), "result") == Payload(
        encoding="", data=b""
    )


@WIRE_SETTINGS
@given(failures)
def test_failures_with_causes_round_trip(failure: Failure) -> None:
    assert wire.failure_from_proto(_through_bytes(wire.failure_to_proto(failure))) == failure


def test_deep_cause_chain_round_trips() -> None:
    failure = Failure(message="leaf")
    for depth in range(30):
        failure = Failure(
            message=f"level {depth}", type="E", kind=FailureKind.CHILD_WORKFLOW, cause=failure
        )
    assert wire.failure_from_proto(_through_bytes(wire.failure_to_proto(failure))) == failure


def test_unknown_failure_kind_and_timeout_type_read_leniently() -> None:
    message = common_pb2.Failure(message="m", kind="from-the-future", timeout_type="eventually")
    failure = wire.failure_from_proto(message)
    assert failure.kind is FailureKind.APPLICATION
    assert failure.timeout_type is None
    typed = wire.failure_from_proto(
        common_pb2.Failure(message="m", kind="timeout", timeout_type="heartbeat")
    )
    assert (typed.kind, typed.timeout_type) == (FailureKind.TIMEOUT, TimeoutType.HEARTBEAT)


@WIRE_SETTINGS
@given(retry_policies())
def test_retry_policies_round_trip(policy: RetryPolicy) -> None:
    message = _through_bytes(wire.retry_policy_to_proto(policy))
    assert wire.retry_policy_from_proto(message) == policy
    assert message.HasField("maximum_interval") == (policy.maximum_interval is not None)


def test_empty_retry_policy_message_means_temporal_defaults() -> None:
    assert wire.retry_policy_from_proto(common_pb2.RetryPolicy()) == RetryPolicy()


def test_invalid_retry_policy_message_names_the_field() -> None:
    message = common_pb2.RetryPolicy(maximum_attempts=-2)
    with pytest.raises(ValueError, match="maximum_attempts"):
        wire.retry_policy_from_proto(message)
    negative = common_pb2.RetryPolicy(
        initial_interval=wire.duration_to_proto(timedelta(seconds=-1))
    )
    with pytest.raises(ValueError, match="initial_interval"):
        wire.retry_policy_from_proto(negative)


@WIRE_SETTINGS
@given(st.timedeltas(min_value=-timedelta(days=10000), max_value=timedelta(days=10000)))
def test_durations_round_trip(value: timedelta) -> None:
    holder = common_pb2.RetryPolicy()
    assert wire.duration_from_proto(holder, "maximum_interval") is None
    holder.maximum_interval.CopyFrom(wire.duration_to_proto(value))
    assert wire.duration_from_proto(_through_bytes(holder), "maximum_interval") == value


@WIRE_SETTINGS
@given(aware_datetimes)
def test_timestamps_round_trip_as_utc(value: datetime) -> None:
    holder = history_pb2.HistoryEvent()
    assert wire.timestamp_from_proto(holder, "time") is None
    holder.time.CopyFrom(wire.timestamp_to_proto(value))
    back = wire.timestamp_from_proto(_through_bytes(holder), "time")
    assert back == value
    assert back is not None
    assert back.utcoffset() == timedelta(0)


@WIRE_SETTINGS
@given(st.timedeltas(), st.datetimes(timezones=st.just(UTC)) | st.datetimes())
def test_time_conversions_agree_with_protobufs_own(span: timedelta, when: datetime) -> None:
    """The direct arithmetic gives what ``FromTimedelta``/``FromDatetime`` and back give (a
    naive datetime is UTC; nanoseconds truncate to microseconds)."""
    duration = duration_pb2.Duration()
    duration.FromTimedelta(span)
    assert wire.duration_to_proto(span) == duration
    assert wire.duration_from_message(duration) == duration.ToTimedelta()
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    assert wire.timestamp_to_proto(when) == stamp
    assert wire.timestamp_from_message(stamp) == stamp.ToDatetime(tzinfo=UTC)


@given(
    st.integers(min_value=-62_135_596_800, max_value=253_402_300_799),
    st.integers(min_value=0, max_value=999_999_999),
)
def test_timestamps_with_nanoseconds_read_as_protobuf_reads_them(seconds: int, nanos: int) -> None:
    stamp = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    assert wire.timestamp_from_message(stamp) == stamp.ToDatetime(tzinfo=UTC)


def test_a_timestamp_out_of_range_raises_protobufs_error() -> None:
    with pytest.raises(ValueError, match="Timestamp is not valid"):
        wire.timestamp_from_message(timestamp_pb2.Timestamp(seconds=10**12))


# ---------------------------------------------------------------- events


@WIRE_SETTINGS
@given(
    event_id=st.integers(1, 2**62),
    time=aware_datetimes,
    attributes=st.sampled_from(ev.ATTRIBUTE_CLASSES).flatmap(values_of),
)
def test_generated_events_round_trip(event_id: int, time: datetime, attributes: Any) -> None:
    event = ev.Event(id=event_id, time=time, attributes=attributes)
    message = _through_bytes(wire.event_to_proto(event))
    assert message.event_type == type(attributes).__name__
    assert wire.event_from_proto(message) == event


@pytest.mark.parametrize("cls", ev.ATTRIBUTE_CLASSES, ids=lambda c: c.__name__)
def test_every_event_type_round_trips(cls: type[Any]) -> None:
    event = ev.Event(
        id=7, time=datetime(2024, 2, 29, 12, 0, 0, 1, tzinfo=UTC), attributes=populated(cls)
    )
    assert wire.event_from_proto(_through_bytes(wire.event_to_proto(event))) == event


@settings(max_examples=20, deadline=None)
@given(histories())
def test_histories_round_trip(events: list[ev.Event]) -> None:
    message = _through_bytes(history_pb2.History(events=[wire.event_to_proto(e) for e in events]))
    assert wire.events_from_proto(message.events) == events


def test_event_attributes_travel_as_the_codec_json() -> None:
    attributes = ev.TimerStarted(seq=3, duration=timedelta(seconds=1, microseconds=5))
    message = wire.event_to_proto(
        ev.Event(id=4, time=datetime(2024, 1, 1, tzinfo=UTC), attributes=attributes)
    )
    assert message.attributes == codec.to_json(attributes)


@pytest.mark.parametrize(
    ("event_type", "attributes", "needle"),
    [
        ("NoSuchEvent", b"{}", "unknown event type 'NoSuchEvent'"),
        ("TimerFired", b"{}", "started_event_id"),
        ("TimerFired", b"\xff", "Invalid JSON"),
    ],
)
def test_bad_event_messages(event_type: str, attributes: bytes, needle: str) -> None:
    message = history_pb2.HistoryEvent(event_id=1, event_type=event_type, attributes=attributes)
    with pytest.raises(InvalidHistoryError, match=needle):
        wire.event_from_proto(message)


# ---------------------------------------------------------------- commands


@WIRE_SETTINGS
@given(st.lists(st.sampled_from(cm.COMMAND_CLASSES).flatmap(values_of), max_size=5))
def test_commands_round_trip(commands: list[Any]) -> None:
    messages = [_through_bytes(wire.command_to_proto(c)) for c in commands]
    assert [m.command_type for m in messages] == [type(c).__name__ for c in commands]
    assert wire.commands_from_proto(messages) == commands


@pytest.mark.parametrize("cls", cm.COMMAND_CLASSES, ids=lambda c: c.__name__)
def test_every_command_type_round_trips(cls: type[Any]) -> None:
    command = populated(cls)
    assert wire.commands_from_proto([_through_bytes(wire.command_to_proto(command))]) == [command]


def _good() -> command_pb2.Command:
    return wire.command_to_proto(cm.StartTimer(seq=1, duration=timedelta(seconds=1)))


@pytest.mark.parametrize(
    ("bad", "field", "needle"),
    [
        (
            command_pb2.Command(command_type="StartTimer", attributes=b'{"seq": 2}'),
            "commands[2].duration",
            "duration",
        ),
        (
            command_pb2.Command(
                command_type="StartTimer", attributes=b'{"seq": 2, "duration": "later"}'
            ),
            "commands[2].duration",
            "duration",
        ),
        (
            command_pb2.Command(
                command_type="ScheduleActivity",
                attributes=b'{"seq": 1, "activity_id": "a", "activity_type": "t", '
                b'"input": [{"data": 1}]}',
            ),
            "commands[2].input.0.data",
            "input.0.data",
        ),
        (
            command_pb2.Command(command_type="LaunchRocket", attributes=b"{}"),
            "commands[2].command_type",
            "LaunchRocket",
        ),
        (
            command_pb2.Command(command_type="StartTimer", attributes=b"{"),
            "commands[2]",
            "Invalid JSON",
        ),
    ],
    ids=["missing", "wrong-type", "nested", "unknown-type", "bad-json"],
)
def test_bad_command_is_named_by_index_and_field(
    bad: command_pb2.Command, field: str, needle: str
) -> None:
    with pytest.raises(InvalidCommandError) as info:
        wire.commands_from_proto([_good(), _good(), bad, _good()])
    assert info.value.field == field
    assert str(info.value).startswith("commands[2]: ")
    assert needle in str(info.value)
