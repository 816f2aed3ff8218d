"""Bad input is rejected with INVALID_ARGUMENT naming the field, and nothing is written."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from chronicle.history import commands, wire
from chronicle.history.values import RetryPolicy
from chronicle.protos.v1 import command_pb2, common_pb2
from chronicle.protos.v1 import service_pb2 as pb
from chronicle.server.app import Server
from chronicle.server.config import ServerConfig
from tests.server.conftest import command_protos, payload_proto, start_request


async def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details()


async def _counts(db) -> tuple[int, int, int]:
    return (
        await db.fetchval("SELECT count(*) FROM executions"),
        await db.fetchval("SELECT count(*) FROM history_events"),
        await db.fetchval("SELECT count(*) FROM tasks"),
    )


@pytest.mark.parametrize("field", ["workflow_id", "workflow_type", "task_queue"])
async def test_start_requires_fields(stub, db, field: str) -> None:
    request = start_request("v-1")
    setattr(request, field, "")
    code, details = await _code(stub.StartWorkflow(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in details
    assert await _counts(db) == (0, 0, 0)


async def test_oversize_payload(server, stub, db) -> None:
    big = payload_proto("x" * (server.config.max_payload_bytes + 10))
    code, details = await _code(stub.StartWorkflow(start_request("v-2", input=[big])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "input[0]" in details
    assert await _counts(db) == (0, 0, 0)


async def test_oversize_payload_in_a_workflow_task_failure(server, stub, db) -> None:
    await stub.StartWorkflow(start_request("v-fail"))
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity="w1"), timeout=10
    )
    before = await _counts(db)
    big = payload_proto("x" * (server.config.max_payload_bytes + 10))
    failure = common_pb2.Failure(message="boom", details=[big])
    code, details = await _code(
        stub.FailWorkflowTask(
            pb.FailWorkflowTaskRequest(task_token=task.task_token, failure=failure, identity="w1")
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "failure.details[0]" in details
    assert await _counts(db) == before
    assert await db.fetchval("SELECT last_workflow_task_failure FROM executions") is None


async def test_unknown_policies(stub, db) -> None:
    code, details = await _code(stub.StartWorkflow(start_request("v-3", id_reuse_policy="nope")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "id_reuse_policy" in details
    code, details = await _code(stub.StartWorkflow(start_request("v-3", id_conflict_policy="nope")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert await _counts(db) == (0, 0, 0)


async def test_already_started_and_policies(stub) -> None:
    first = await stub.StartWorkflow(start_request("dup", request_id="r1"))
    code, details = await _code(stub.StartWorkflow(start_request("dup")))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert "'dup' is already running" in details
    assert first.run_id in details
    again = await stub.StartWorkflow(start_request("dup", request_id="r1"))
    assert (again.run_id, again.started) == (first.run_id, False)
    existing = await stub.StartWorkflow(start_request("dup", id_conflict_policy="use_existing"))
    assert (existing.run_id, existing.started) == (first.run_id, False)
    await stub.TerminateWorkflow(pb.TerminateWorkflowRequest(workflow_id="dup"))
    code, _ = await _code(
        stub.StartWorkflow(start_request("dup", id_reuse_policy="reject_duplicate"))
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS
    second = await stub.StartWorkflow(start_request("dup"))
    assert second.started
    assert second.run_id != first.run_id


async def test_unknown_ids(stub) -> None:
    for call in (
        stub.DescribeWorkflow(pb.DescribeWorkflowRequest(workflow_id="ghost")),
        stub.SignalWorkflow(pb.SignalWorkflowRequest(workflow_id="ghost", signal_name="s")),
        stub.TerminateWorkflow(pb.TerminateWorkflowRequest(workflow_id="ghost")),
        stub.RequestCancelWorkflow(pb.RequestCancelWorkflowRequest(workflow_id="ghost")),
        stub.GetWorkflowHistory(pb.GetWorkflowHistoryRequest(workflow_id="ghost")),
        stub.GetWorkflowResult(pb.GetWorkflowResultRequest(workflow_id="ghost")),
    ):
        code, details = await _code(call)
        assert code == grpc.StatusCode.NOT_FOUND
        assert "'ghost'" in details


async def test_signal_to_closed_run(stub) -> None:
    await stub.StartWorkflow(start_request("closed"))
    await stub.TerminateWorkflow(pb.TerminateWorkflowRequest(workflow_id="closed"))
    code, details = await _code(
        stub.SignalWorkflow(pb.SignalWorkflowRequest(workflow_id="closed", signal_name="s"))
    )
    assert code == grpc.StatusCode.NOT_FOUND
    assert "'closed'" in details


async def test_bad_tokens(stub) -> None:
    for token in (b"", b"garbage", b'{"t": "act"}'):
        code, details = await _code(
            stub.CompleteWorkflowTask(pb.CompleteWorkflowTaskRequest(task_token=token))
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert "task_token" in details
        code, _ = await _code(
            stub.CompleteActivityTask(pb.CompleteActivityTaskRequest(task_token=token))
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_bad_commands_write_nothing(stub, db) -> None:
    await stub.StartWorkflow(start_request("cmds"))
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity="w"), timeout=5
    )
    before = await _counts(db)
    bad_requests = {
        "commands[0]": [command_pb2.Command(command_type="StartTimer", attributes=b"{not json")],
        "commands[1]": [
            command_pb2.Command(command_type="StartTimer", attributes=b'{"seq": 1, "duration": 1}'),
            command_pb2.Command(command_type="Bogus", attributes=b"{}"),
        ],
        "commands[0].duration": command_protos(commands.StartTimer(seq=1, duration=timedelta(0))),
        "commands[0].activity_type": command_protos(
            commands.ScheduleActivity(seq=1, activity_id="a", activity_type="")
        ),
        "commands[0]:": command_protos(
            commands.CompleteWorkflow(), commands.StartTimer(seq=1, duration=timedelta(seconds=1))
        ),
    }
    for field, protos in bad_requests.items():
        code, details = await _code(
            stub.CompleteWorkflowTask(
                pb.CompleteWorkflowTaskRequest(task_token=task.task_token, commands=protos)
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field.rstrip(":") in details, (field, details)
    assert await _counts(db) == before
    # The task is still valid after all those rejections.
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token, commands=command_protos(commands.CompleteWorkflow())
        )
    )


async def test_bad_list_query(stub) -> None:
    for query in (
        "status = running",
        "color = 'red'",
        "status = 'running' OR type = 'x'",
        "status = 'bogus'",
        "type = 'x' AND",
    ):
        code, details = await _code(stub.ListWorkflows(pb.ListWorkflowsRequest(query=query)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, query
        assert "query" in details


async def test_list_paging(stub) -> None:
    for index in range(5):
        await stub.StartWorkflow(start_request(f"page-{index}", workflow_type="pager"))
    seen: list[str] = []
    token = b""
    while True:
        page = await stub.ListWorkflows(
            pb.ListWorkflowsRequest(
                query="type = 'pager' AND status = 'running'", page_size=2, next_page_token=token
            )
        )
        seen += [e.workflow_id for e in page.executions]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"page-{i}" for i in reversed(range(5))]


async def test_update_requests_name_what_is_missing(stub) -> None:
    code, details = await _code(stub.UpdateWorkflow(pb.UpdateWorkflowRequest(workflow_id="x")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "update_name is required" in details
    request = pb.UpdateWorkflowRequest(workflow_id="x", update_name="u", update_id="1")
    code, details = await _code(stub.UpdateWorkflow(request))
    assert code == grpc.StatusCode.NOT_FOUND
    assert "workflow 'x' not found" in details


async def test_long_polls_return_empty_at_deadline(stub) -> None:
    empty = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="nothing"), timeout=1.0
    )
    assert not empty.task_token
    await stub.StartWorkflow(start_request("waits"))
    result = await stub.GetWorkflowResult(
        pb.GetWorkflowResultRequest(
            workflow_id="waits", wait=wire.duration_to_proto(timedelta(seconds=0.3))
        ),
        timeout=5,
    )
    assert not result.closed
    history = await stub.GetWorkflowHistory(
        pb.GetWorkflowHistoryRequest(
            workflow_id="waits",
            first_event_id=3,
            wait=wire.duration_to_proto(timedelta(seconds=0.3)),
        ),
        timeout=5,
    )
    assert not history.events
    assert not history.closed


async def test_terminate_existing_and_memo(stub) -> None:
    first = await stub.StartWorkflow(start_request("term-ex"))
    second = await stub.StartWorkflow(
        start_request(
            "term-ex", id_conflict_policy="terminate_existing", memo={"owner": payload_proto("me")}
        )
    )
    assert second.started
    old = await stub.GetWorkflowResult(
        pb.GetWorkflowResultRequest(workflow_id="term-ex", run_id=first.run_id), timeout=5
    )
    assert old.status == "terminated"
    described = await stub.DescribeWorkflow(pb.DescribeWorkflowRequest(workflow_id="term-ex"))
    assert described.info.run_id == second.run_id
    assert wire.payload_from_proto(described.info.memo["owner"]).data == b'"me"'


async def test_signal_request_id_deduplicates(stub) -> None:
    await stub.StartWorkflow(start_request("sig-dedupe"))
    for _ in range(2):
        await stub.SignalWorkflow(
            pb.SignalWorkflowRequest(workflow_id="sig-dedupe", signal_name="s", request_id="once")
        )
    history = await stub.GetWorkflowHistory(pb.GetWorkflowHistoryRequest(workflow_id="sig-dedupe"))
    assert [e.event_type for e in history.events].count("SignalReceived") == 1


async def test_a_retried_signal_with_start_is_recorded_once(stub) -> None:
    """Signal-with-start to a running run, sent twice with one request id (a retry after a
    lost answer): the signal is recorded once, as with SignalWorkflow."""
    await stub.StartWorkflow(start_request("sws-dedupe"))
    request = start_request(
        "sws-dedupe",
        id_conflict_policy="use_existing",
        signal_name="go",
        request_id="same-request-id",
    )
    for _ in range(2):
        await stub.StartWorkflow(request)
    history = await stub.GetWorkflowHistory(pb.GetWorkflowHistoryRequest(workflow_id="sws-dedupe"))
    assert [e.event_type for e in history.events].count("SignalReceived") == 1


async def test_a_port_in_use_is_refused(server, database_url) -> None:
    """A second server on a port another one listens on fails to start (gRPC would share the
    port otherwise, each server answering some of the calls)."""
    other = Server(ServerConfig(database_url=database_url, port=server.port))
    with pytest.raises(OSError, match="cannot bind"):
        await other.start()


async def test_concurrent_starts_of_one_id(stub, db) -> None:
    results = await asyncio.gather(
        *(stub.StartWorkflow(start_request("race")) for _ in range(6)), return_exceptions=True
    )
    started = [r for r in results if not isinstance(r, BaseException)]
    assert len(started) == 1
    assert all(
        isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.ALREADY_EXISTS
        for r in results
        if isinstance(r, BaseException)
    )
    assert await db.fetchval("SELECT count(*) FROM executions WHERE workflow_id = 'race'") == 1


LONG = "é" * 500 + "x"  # 1,001 bytes in UTF-8, 501 characters


@pytest.mark.parametrize(
    ("field", "start"),
    [
        ("workflow_id", start_request(LONG)),
        ("task_queue", start_request("v-long", task_queue=LONG)),
        ("workflow_type", start_request("v-long", workflow_type=LONG)),
        ("request_id", start_request("v-long", request_id=LONG)),
        ("namespace", start_request("v-long", namespace="n" * 256)),
    ],
)
async def test_identifiers_over_their_limit_are_refused(
    stub, db, field: str, start: pb.StartWorkflowRequest
) -> None:
    code, details = await _code(stub.StartWorkflow(start))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(f"{field} is "), details
    assert "-byte limit for identifiers" in details
    assert await _counts(db) == (0, 0, 0)


async def test_identifiers_in_commands_over_their_limit_are_refused(stub, db) -> None:
    await stub.StartWorkflow(start_request("v-cmd-ids"))
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity="w"), timeout=5
    )
    before = await _counts(db)
    bad = {
        "commands[0].activity_id": commands.ScheduleActivity(
            seq=1, activity_id=LONG, activity_type="a"
        ),
        "commands[0].workflow_id": commands.StartChildWorkflow(
            seq=1, workflow_id=LONG, workflow_type="child"
        ),
        "commands[0].signal_name": commands.SignalExternalWorkflow(
            seq=1, workflow_id="other", signal_name=LONG
        ),
    }
    await _each_refused(stub, task, bad, "is 1001 bytes long")
    assert await _counts(db) == before


async def test_identifiers_at_their_limit_work_watched_signalled_and_closed(stub, db) -> None:
    """Every identifier as long as allowed, in characters JSON spells in 6 bytes: the run is
    started, followed by a waiting history poll (so its transitions notify), signalled with a
    request id as long as allowed (indexed with the run's ids), and closed."""
    workflow_id = "\x01" * 1000
    namespace = "\x02" * 255
    started = await stub.StartWorkflow(
        start_request(workflow_id, namespace=namespace, task_queue="\x03" * 1000)
    )
    waiting = asyncio.ensure_future(
        stub.GetWorkflowHistory(
            pb.GetWorkflowHistoryRequest(
                namespace=namespace,
                workflow_id=workflow_id,
                first_event_id=3,
                wait=Duration(seconds=10),
            ),
            timeout=15,
        )
    )
    await asyncio.sleep(0.3)  # the poll marks the run watched, then waits
    await stub.SignalWorkflow(
        pb.SignalWorkflowRequest(
            namespace=namespace,
            workflow_id=workflow_id,
            signal_name="s" * 1000,
            request_id="r" * 1000,
            input=[payload_proto(1)],
        )
    )
    page = await waiting
    assert [e.event_type for e in page.events] == ["SignalReceived"]
    await stub.TerminateWorkflow(
        pb.TerminateWorkflowRequest(namespace=namespace, workflow_id=workflow_id, reason="done")
    )
    status = await db.fetchval("SELECT status FROM executions WHERE run_id = $1", started.run_id)
    assert status == "terminated"


async def test_durations_over_a_hundred_years_are_refused(stub, db) -> None:
    """The server adds durations to the current time: past the year 9999 that cannot be
    represented. Refused by name instead of failing as INTERNAL."""
    century = Duration(seconds=200 * 365 * 86400)
    code, details = await _code(stub.StartWorkflow(start_request("v-dur", run_timeout=century)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("run_timeout is 73000 days"), details
    assert await _counts(db) == (0, 0, 0)
    await stub.StartWorkflow(start_request("v-dur"))
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity="w"), timeout=5
    )
    before = await _counts(db)
    bad = {
        "commands[0].duration": commands.StartTimer(seq=1, duration=timedelta(days=3_000_000)),
        "commands[0].start_to_close_timeout": commands.ScheduleActivity(
            seq=1,
            activity_id="a",
            activity_type="a",
            start_to_close_timeout=timedelta(days=40_000),
        ),
        "commands[0].retry_policy.maximum_interval": commands.ScheduleActivity(
            seq=1,
            activity_id="a",
            activity_type="a",
            retry_policy=RetryPolicy(maximum_interval=timedelta(days=40_000)),
        ),
    }
    await _each_refused(stub, task, bad, "is ")
    assert await _counts(db) == before


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"maximum_attempts": -1}, "maximum_attempts"),
        ({"backoff_coefficient": "NaN"}, "backoff_coefficient"),
        ({"backoff_coefficient": 0.5}, "backoff_coefficient"),
        ({"initial_interval": 0}, "initial_interval"),
        ({"initial_interval": 2, "maximum_interval": 1}, "maximum_interval"),
        ({"maximum_interval": 40_000 * 86400}, "commands[0].retry_policy.maximum_interval"),
    ],
)
async def test_a_child_start_with_an_invalid_retry_policy_is_refused_and_writes_nothing(
    stub, db, policy: dict[str, object], field: str
) -> None:
    """A ``StartChildWorkflow`` whose ``retry_policy`` is invalid (the SDK's ``RetryPolicy``
    refuses these itself, so the JSON is written by hand) is refused with INVALID_ARGUMENT
    naming the field, as a top-level start's policy is; nothing is written, the task stays
    valid. Before child retry policies the field was ignored and the child started."""
    await stub.StartWorkflow(start_request("bad-child-policy"))
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity="w"), timeout=5
    )
    before = await _counts(db)
    attributes = {"seq": 1, "workflow_id": "kid", "workflow_type": "t", "retry_policy": policy}
    command = command_pb2.Command(
        command_type="StartChildWorkflow", attributes=json.dumps(attributes).encode()
    )
    code, details = await _code(
        stub.CompleteWorkflowTask(
            pb.CompleteWorkflowTaskRequest(task_token=task.task_token, commands=[command])
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "retry_policy" in details, details
    assert field in details, details
    assert await _counts(db) == before
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token, commands=command_protos(commands.CompleteWorkflow())
        )
    )


async def _each_refused(
    stub, task: pb.PollWorkflowTaskResponse, bad: dict[str, commands.Command], message: str
) -> None:
    """Each command of ``bad``, alone in a completion of ``task``, is refused with
    INVALID_ARGUMENT, the details starting with its key (the field) and ``message``."""
    for field, command in bad.items():
        code, details = await _code(
            stub.CompleteWorkflowTask(
                pb.CompleteWorkflowTaskRequest(
                    task_token=task.task_token, commands=command_protos(command)
                )
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT, field
        assert details.startswith(f"{field} {message}"), details


async def test_a_nul_character_in_a_string_is_refused_as_invalid_argument(stub, db) -> None:
    """Postgres stores no NUL in text or jsonb; a request carrying one was answered INTERNAL
    (and logged as a server error). It is the caller's input: INVALID_ARGUMENT, nothing
    written. Found on ReleaseEagerWorkflowTask (session 7) and the completions' request_id."""
    code, details = await _code(stub.StartWorkflow(start_request("nul\x00id")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "NUL" in details
    assert await _counts(db) == (0, 0, 0)
    await stub.StartWorkflow(start_request("v-nul"))
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity="w1"), timeout=10
    )
    release = pb.ReleaseEagerWorkflowTaskRequest(
        workflow_execution=task.workflow_execution, identity="w1", request_id="r\x00"
    )
    code, details = await _code(stub.ReleaseEagerWorkflowTask(release))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "NUL" in details
    await stub.SignalWorkflow(pb.SignalWorkflowRequest(workflow_id="v-nul", signal_name="s"))
    before = await _counts(db)
    eager = pb.CompleteWorkflowTaskRequest(  # the request id goes into a jsonb event
        task_token=task.task_token, identity="w1", eager_workflow_task=True, request_id="r\x00"
    )
    code, details = await _code(stub.CompleteWorkflowTask(eager))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "NUL" in details
    assert await _counts(db) == before
    eager.request_id = "r1"  # nothing was applied: the same task completes
    assert (await stub.CompleteWorkflowTask(eager)).workflow_task.task_token


async def test_a_child_start_with_a_timeout_that_is_not_positive_is_refused(stub, db) -> None:
    """A child's ``execution_timeout`` / ``run_timeout`` of zero or less is refused as a
    top-level start's is (and as an activity's timeouts are), nothing written. It used to start
    the child with a timer already due: the child timed out at once, retry policy or not."""
    await stub.StartWorkflow(start_request("v-child-timeouts"))
    task = await stub.PollWorkflowTask(
        pb.PollWorkflowTaskRequest(task_queue="q", identity="w"), timeout=5
    )
    before = await _counts(db)
    bad = {
        "commands[0].execution_timeout": commands.StartChildWorkflow(
            seq=1, workflow_id="kid", workflow_type="t", execution_timeout=timedelta(0)
        ),
        "commands[0].run_timeout": commands.StartChildWorkflow(
            seq=1, workflow_id="kid", workflow_type="t", run_timeout=-timedelta(seconds=5)
        ),
    }
    await _each_refused(stub, task, bad, "must be positive")
    assert await _counts(db) == before
    await stub.CompleteWorkflowTask(
        pb.CompleteWorkflowTaskRequest(
            task_token=task.task_token, commands=command_protos(commands.CompleteWorkflow())
        )
    )
