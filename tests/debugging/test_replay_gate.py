"""Replay against today's code: `chronicle.testing.replay` over one or many histories, and
`chronicle replay MODULE --workflow-id/--query` straight from a server (the pre-deploy gate)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from chronicle import testing
from chronicle.sdk.activity import activity
from chronicle.sdk.client import Client
from chronicle.sdk.errors import NondeterminismError
from chronicle.sdk.worker import Worker
from chronicle.sdk.workflow import workflow
from chronicle.server.app import Server
from tests.debugging.cli_process import run_cli
from tests.e2e.workflows import add_steps
from tests.sdk_io.helpers import eventually

GOLDEN = Path(__file__).resolve().parents[1] / "histories" / "add_steps.json"


@workflow(name="add_steps")
async def add_steps_changed(start: int, steps: int) -> int:
    await workflow.sleep(timedelta(seconds=1))  # CHANGED_LINE
    return start + steps


def test_one_history_replays_cleanly_and_reports_it() -> None:
    [result] = testing.replay(GOLDEN, workflows=[add_steps])
    assert result.ok
    assert result.workflow_type == "add_steps"
    assert str(result).endswith("replays cleanly")


def test_one_diverging_history_raises_the_precise_error() -> None:
    with pytest.raises(NondeterminismError) as caught:
        testing.replay(GOLDEN, workflows=[add_steps_changed])
    assert "test_replay_gate.py:" in str(caught.value)
    assert "tests/e2e/workflows.py:" in str(caught.value)


def test_many_histories_list_exactly_the_ones_that_break(tmp_path: Path) -> None:
    document = json.loads(GOLDEN.read_text())
    other = dict(document, workflow_id="other-run")
    events = testing.load_history(GOLDEN)
    histories = [GOLDEN, other, events[:3]]  # the last: its first task not answered yet
    with pytest.raises(testing.ReplayFailed) as caught:
        testing.replay(histories, workflows=[add_steps_changed])
    assert len(caught.value.results) == 3
    assert len(caught.value.failures) == 2  # the short history has no command yet: it is fine
    results = testing.replay(histories, workflows=[add_steps], raise_on_failure=False)
    assert [r.ok for r in results] == [True, True, True]
    assert [r.workflow_id for r in results][:2] == [document["workflow_id"], "other-run"]


def test_a_history_of_an_unknown_type_is_a_failed_result() -> None:
    @workflow(name="something_else")
    async def something_else() -> None:
        return None

    [result] = testing.replay(GOLDEN, workflows=[something_else], raise_on_failure=False)
    assert isinstance(result.error, LookupError)
    assert "add_steps" in str(result.error)


@activity(start_to_close_timeout=timedelta(seconds=10))
async def reserve(n: int) -> int:
    return n


@workflow(name="gated")
async def gated(n: int) -> int:
    if n > 1:
        n = await reserve(n)
    await workflow.wait_signal("go")
    return n


GATED_V2 = """
from datetime import timedelta
from chronicle import activity, workflow

@activity(start_to_close_timeout=timedelta(seconds=10))
async def reserve_twice(n: int) -> int:
    return 2 * n

@workflow(name="gated")
async def gated(n: int) -> int:
    if n > 1:
        n = await reserve_twice(n)  # V2_LINE
    await workflow.wait_signal("go")
    return n
"""


async def _waiting(client: Client, workflow_id: str, tasks: int) -> None:
    async def check() -> bool | None:
        events = await client.get_handle(workflow_id).history()
        completed = [e for e in events if e.type == "WorkflowTaskCompleted"]
        return True if len(completed) >= tasks and events[-1].id == completed[-1].id else None

    await eventually(check)


async def test_query_gate_lists_exactly_the_running_executions_that_would_break(
    server: Server, client: Client, tmp_path: Path
) -> None:
    async with Worker(client, task_queue="gate", workflows=[gated], activities=[reserve]):
        await client.start(gated, 0, id="gated-clean", task_queue="gate")
        await client.start(gated, 5, id="gated-broken", task_queue="gate")
        await _waiting(client, "gated-clean", 1)
        await _waiting(client, "gated-broken", 2)
    module = tmp_path / "gated_v2.py"
    module.write_text(GATED_V2)
    address = f"127.0.0.1:{server.port}"
    query = "status = 'running' AND type = 'gated'"

    status, out, err = await run_cli("--address", address, "replay", str(module), "--query", query)
    assert status == 1, out + err
    assert "ok: gated-clean" in out
    assert "error: gated-broken" in err
    v2_line = 1 + GATED_V2.splitlines().index("        n = await reserve_twice(n)  # V2_LINE")
    assert f"ScheduleActivity(activity_type='reserve_twice', seq=1) at gated_v2.py:{v2_line}" in err
    assert "test_replay_gate.py:" in err  # where the recorded command came from
    assert err.strip().splitlines()[-1].startswith("1 of 2 runs would break with")
    assert "gated-clean" not in err

    status, out, err = await run_cli(
        "--address", address, "replay", str(module), "--workflow-id", "gated-clean"
    )
    assert status == 0, err
    assert "replays cleanly" in out

    status, out, err = await run_cli(
        "replay", str(module), "--address", address, "--query", "type = 'nothing'"
    )
    assert status == 0, err
    assert "all 0 runs replay cleanly" in out

    results = await testing.replay_from_server(client, [gated], query=query)
    assert sorted(r.workflow_id for r in results if r.ok) == ["gated-broken", "gated-clean"]


async def test_replay_usage_errors_are_one_line() -> None:
    status, _, err = await run_cli("replay", "tests.e2e.workflows")
    assert status == 2
    assert "nothing to replay" in err
    status, _, err = await run_cli(
        "replay", str(GOLDEN), "tests.e2e.workflows", "--workflow-id", "x"
    )
    assert status == 2
    assert "not both" in err
