"""`chronicle replay HISTORY.json MODULE`: clean replays, divergences and bad files, each with
one clear line and the right exit status (no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from chronicle.history import events as ev
from chronicle.history.codec import event_to_dict
from chronicle.history.payloads import to_payload, to_payloads

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "histories" / "add_steps.json"


def replay(history: Path, module: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chronicle", "replay", str(history), module],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_clean_replay_exits_zero() -> None:
    run = replay(GOLDEN, "tests.e2e.workflows")
    assert run.returncode == 0, run.stderr
    assert "replays" in run.stdout


def test_divergence_names_both_call_sites(tmp_path: Path) -> None:
    changed = tmp_path / "changed.py"
    changed.write_text(
        "from chronicle import workflow\n"
        "from tests.e2e.workflows import slow_increment\n"
        "@workflow(name='add_steps')\n"
        "async def add_steps(start: int, steps: int) -> int:\n"
        "    return await slow_increment(start)\n"
    )
    run = replay(GOLDEN, str(changed))
    assert run.returncode == 1
    assert "tests/e2e/workflows.py:" in run.stderr
    assert "changed.py:5" in run.stderr
    assert "Traceback" not in run.stderr


def test_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.json"
    truncated.write_text(GOLDEN.read_text()[:300])
    run = replay(truncated, "tests.e2e.workflows")
    assert run.returncode == 1
    assert run.stderr.startswith("error: cannot read the history")
    assert "Traceback" not in run.stderr


def test_unknown_format_version_is_rejected(tmp_path: Path) -> None:
    document = json.loads(GOLDEN.read_text())
    document["version"] = 9
    future = tmp_path / "future.json"
    future.write_text(json.dumps(document))
    run = replay(future, "tests.e2e.workflows")
    assert run.returncode == 1
    assert "unsupported history format version 9" in run.stderr


def test_malformed_event_names_the_problem(tmp_path: Path) -> None:
    document = json.loads(GOLDEN.read_text())
    document["events"][4]["attributes"]["seq"] = "not a number"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(document))
    run = replay(broken, "tests.e2e.workflows")
    assert run.returncode == 1
    assert "seq" in run.stderr
    assert "Traceback" not in run.stderr


def test_debug_names_a_malformed_history_without_a_traceback(tmp_path: Path) -> None:
    document = json.loads(GOLDEN.read_text())
    document["events"][3]["type"] = "NoSuchEvent"
    broken = tmp_path / "unknown-type.json"
    broken.write_text(json.dumps(document))
    run = subprocess.run(
        [sys.executable, "-m", "chronicle", "debug", str(broken), "tests.e2e.workflows"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        input="",
    )
    assert run.returncode != 0
    assert run.stderr.startswith("error: cannot read the history"), run.stderr
    assert "Traceback" not in run.stderr


def _with_workflow_started_at(position: int, tmp_path: Path) -> Path:
    """The golden history with its WorkflowStarted moved (``0``: dropped) or repeated."""
    document = json.loads(GOLDEN.read_text())
    events = document["events"]
    events = events[1:] if position == 0 else [*events[:position], events[0], *events[position:]]
    document["events"] = [dict(event, id=i) for i, event in enumerate(events, start=1)]
    path = tmp_path / f"started-at-{position}.json"
    path.write_text(json.dumps(document))
    return path


def test_a_history_must_start_with_its_only_workflow_started(tmp_path: Path) -> None:
    """Both `replay` and `debug` refuse it in one line naming the event, before running code."""
    cases = {
        0: "event 1 (WorkflowTaskScheduled): a history starts with WorkflowStarted as event 1",
        5: "event 6 (WorkflowStarted): WorkflowStarted must be event 1, and only event 1",
    }
    for position, problem in cases.items():
        path = _with_workflow_started_at(position, tmp_path)
        run = replay(path, "tests.e2e.workflows")
        assert run.returncode == 1
        assert f"InvalidHistoryError: {problem}" in run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
        debug = subprocess.run(
            [sys.executable, "-m", "chronicle", "debug", str(path), "tests.e2e.workflows"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            input="cont\n",
        )
        assert debug.returncode == 1
        assert debug.stderr == f"error: not a valid history: {problem}\n"


LOCAL_V1 = """
from chronicle import activity, workflow

@activity
async def charge_card(order: str) -> str:
    return "receipt-" + order

@activity
async def authorize_card(order: str) -> str:
    return "auth-" + order

@workflow(name="billing")
async def billing(order: str) -> str:
    return await workflow.execute_local_activity(charge_card, order)
"""


def _local_activity_history(path: Path) -> None:
    """A run of LOCAL_V1: one local activity (``charge_card``), recorded as its marker."""
    events = [
        ev.WorkflowStarted(workflow_type="billing", task_queue="q", input=to_payloads(["o-7"])),
        ev.WorkflowTaskScheduled(task_queue="q"),
        ev.WorkflowTaskStarted(scheduled_event_id=2),
        ev.WorkflowTaskCompleted(scheduled_event_id=2, started_event_id=3),
        ev.MarkerRecorded(
            seq=1,
            marker_name="local_activity",
            details={
                "activity_type": to_payload("charge_card"),
                "attempt": to_payload(1),
                "result": to_payload("receipt-o-7"),
            },
            workflow_task_completed_event_id=4,
        ),
        ev.WorkflowCompleted(result=to_payload("receipt-o-7"), workflow_task_completed_event_id=4),
    ]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    document = {
        "format": "chronicle-history",
        "version": 1,
        "workflow_id": "bill-7",
        "run_id": "r-7",
        "events": [
            event_to_dict(ev.Event(id=i, time=start + timedelta(seconds=i), attributes=a))
            for i, a in enumerate(events, start=1)
        ],
    }
    path.write_text(json.dumps(document))


def test_a_swapped_local_activity_is_a_divergence(tmp_path: Path) -> None:
    history = tmp_path / "billing.json"
    _local_activity_history(history)
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    v1 = tmp_path / "v1" / "billing.py"
    v1.write_text(LOCAL_V1)
    v2 = tmp_path / "v2" / "billing.py"
    v2.write_text(LOCAL_V1.replace("local_activity(charge_card,", "local_activity(authorize_card,"))

    run = replay(history, str(v1))
    assert run.returncode == 0, run.stderr
    run = replay(history, str(v2))
    assert run.returncode == 1
    assert "NondeterminismError: workflow 'bill-7' (run r-7, type billing)" in run.stderr
    assert "MarkerRecorded(activity_type='charge_card', marker_name='local_activity'" in run.stderr
    assert "RecordMarker(activity_type='authorize_card', marker_name='local_activity'" in run.stderr
    assert "billing.py:14 in billing" in run.stderr
    assert "Traceback" not in run.stderr
