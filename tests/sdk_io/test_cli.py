"""The ``chronicle`` command line without a real server: errors are one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chronicle.cli import main
from chronicle.cli._worker import load_module, module_definitions
from tests.sdk_io.helpers import free_port


def test_no_server_is_one_clear_line_without_a_traceback() -> None:
    port = free_port()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "chronicle",
            "--address",
            f"127.0.0.1:{port}",
            "workflow",
            "describe",
            "order-1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        f"error: cannot reach the Chronicle server at 127.0.0.1:{port}: no connection after 5 s"
    ]


def test_an_input_that_is_not_json_names_the_input(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["workflow", "start", "order", "--id", "o", "-q", "q", "--input", "o-1"])
    assert status == 2
    assert "--input #1 is not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["inf", "1e20", "nan", "-1", "soon"])
def test_a_duration_flag_out_of_range_names_the_flag(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["workflow", "start", "o", "--id", "o", "-q", "q", f"--execution-timeout={value}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--execution-timeout" in err
    assert "expected a number of seconds >= 0" in err
    assert "Traceback" not in err


def test_a_worker_module_without_definitions_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "nothing_here.py"
    empty.write_text("X = 1\n")
    assert main(["worker", str(empty), "--task-queue", "q"]) == 1
    assert "defines no @workflow or @activity" in capsys.readouterr().err


def test_a_missing_module_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "no_such_module_xyz", "--task-queue", "q"]) == 1
    assert "cannot import module 'no_such_module_xyz'" in capsys.readouterr().err


def test_the_order_sample_defines_its_workflow_and_activities() -> None:
    module = load_module(str(Path(__file__).parents[2] / "samples" / "order.py"))
    workflows, activities = module_definitions(module)
    assert [w.__name__ for w in workflows] == ["order"]
    assert {a.name for a in activities} == {
        "charge_card",
        "refund_card",
        "reserve_stock",
        "release_stock",
        "ship",
    }


def test_server_start_needs_a_database_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CHRONICLE_DATABASE_URL", raising=False)
    assert main(["server", "start"]) == 2
    assert "--database-url" in capsys.readouterr().err
