"""The payload size checks: an oversized payload is named; a request within the limit is not
walked, and one over it in total but with every payload within passes."""

from __future__ import annotations

import pytest

from chronicle.history import commands, wire
from chronicle.history.values import Payload
from chronicle.protos.v1 import service_pb2 as pb
from chronicle.server import errors
from chronicle.server.frontend._validate import check_message, check_values

LIMIT = 100


def _command(size: int) -> commands.ScheduleActivity:
    return commands.ScheduleActivity(
        seq=1, activity_id="a", activity_type="t", input=(Payload(data=b"x" * size),)
    )


def test_payloads_within_the_limit_pass_even_when_the_request_is_larger() -> None:
    items = [_command(LIMIT), _command(LIMIT)]
    request = pb.CompleteWorkflowTaskRequest(commands=[wire.command_to_proto(c) for c in items])
    assert request.ByteSize() > LIMIT
    check_values(items, LIMIT, "commands", encoded_size=request.ByteSize())
    message = pb.SignalWorkflowRequest(
        input=[wire.payload_to_proto(Payload(data=b"x" * LIMIT))] * 2
    )
    assert message.ByteSize() > LIMIT
    check_message(message, LIMIT)


def test_an_oversized_payload_is_named() -> None:
    items = [_command(1), _command(LIMIT + 1)]
    request = pb.CompleteWorkflowTaskRequest(commands=[wire.command_to_proto(c) for c in items])
    with pytest.raises(errors.InvalidArgument, match=r"commands\[1\]\.input\[0\] is 101 bytes"):
        check_values(items, LIMIT, "commands", encoded_size=request.ByteSize())
    message = pb.SignalWorkflowRequest(
        input=[wire.payload_to_proto(Payload(data=b"x" * (LIMIT + 1)))]
    )
    with pytest.raises(errors.InvalidArgument, match=r"input\[0\] is 101 bytes"):
        check_message(message, LIMIT)


def test_a_payload_is_never_larger_than_its_encoding() -> None:
    """What lets a request within the limit skip the walk: base64 in JSON, or raw bytes."""
    payload = Payload(data=bytes(range(256)) * 4)
    encoded = wire.command_to_proto(
        commands.ScheduleActivity(seq=1, activity_id="a", activity_type="t", input=(payload,))
    )
    assert encoded.ByteSize() > len(payload.data)
    assert wire.payload_to_proto(payload).ByteSize() > len(payload.data)
