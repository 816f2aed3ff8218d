"""`chronicle replay HISTORY.json MODULE`: clean replays, divergences and bad files, each with
one clear line and the right exit status (no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
