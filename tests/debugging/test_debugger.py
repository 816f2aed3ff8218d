"""`chronicle debug`: replay a history task by task under pdb, with a history cursor."""

from __future__ import annotations

import io
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from chronicle.cli._debug import HistoryDebugger, task_chunks
from chronicle.history import events as ev
from chronicle.sdk.activity import activity
from chronicle.sdk.replay import RecordedRun
from chronicle.sdk.testing import load_run
from chronicle.sdk.workflow import workflow
from tests.sdk.sdk_histories import Sim

REPO = Path(__file__).resolve().parents[2]
HISTORIES = REPO / "tests" / "histories"
FILE = Path(__file__).resolve()


def _line(marker: str) -> int:
    lines = FILE.read_text().splitlines()
    return 1 + next(i for i, text in enumerate(lines) if text.endswith(f"# {marker}"))


@activity
async def add_one(x: int) -> int:
    return x + 1


@workflow  # WORKFLOW
async def counts(start: int) -> int:
    total = start
    for _ in range(3):
        total = await add_one(total)  # AWAIT
        doubled = total * 2  # AFTER
    await workflow.sleep(timedelta(seconds=5))
    return total + doubled


def _recorded() -> RecordedRun:
    sim = Sim(counts, 10)
    sim.step()
    for seq, value in ((1, 11), (2, 12), (3, 13)):
        sim.activity_completed(seq, value)
        sim.step()
    sim.timer_fired(1)
    sim.step()
    return RecordedRun(sim.events, "counts-1", "run-1")


def _session(commands: str, run: RecordedRun | None = None) -> tuple[HistoryDebugger, str]:
    out = io.StringIO()
    debugger = HistoryDebugger(
        run or _recorded(), [counts], stdin=io.StringIO(commands), stdout=out
    )
    debugger.cmdloop()
    return debugger, out.getvalue()


def test_chunks_hold_one_workflow_task_each() -> None:
    events = _recorded().events
    chunks = task_chunks(list(events))
    assert [e for chunk in chunks for e in chunk] == list(events)
    for chunk in chunks:
        started = [e for e in chunk if isinstance(e.attributes, ev.WorkflowTaskStarted)]
        assert len(started) == 1


def test_next_moves_the_cursor_one_task_and_locals_show_the_workflow_state() -> None:
    debugger, out = _session("next\nnext\ncursor\nlocals\nquit\n")
    assert "ActivityScheduled         add_one(10)" in out
    assert f"@ tests/debugging/test_debugger.py:{_line('AWAIT')}" in out  # the source line
    assert "cursor: workflow task started at event " in out
    assert f"test_debugger.py:{_line('AWAIT')} in counts" in out
    assert "    total = 11" in out
    assert "    start = 10" in out
    assert debugger.cursor == debugger.chunks[1][-1].id


def test_goto_replays_until_the_event_and_events_marks_the_cursor() -> None:
    events = list(_recorded().events)
    fired = next(e.id for e in events if e.type == "TimerFired")
    debugger, out = _session(f"goto {fired}\nevents\nlocals\nquit\n")
    assert debugger.cursor >= fired
    assert any(line.startswith(">") for line in out.splitlines())
    assert "    total = 13" in out


def test_a_breakpoint_in_workflow_code_stops_in_pdb_with_the_cursor() -> None:
    commands = "\n".join(
        [
            f"break {FILE}:{_line('AFTER')}",
            "next",
            "next",  # the second task resumes after add_one(10): the breakpoint hits
            "p total",
            "cursor",
            "continue",
            "quit",
        ]
    )
    _, out = _session(commands + "\n")
    assert f"breakpoint at tests/debugging/test_debugger.py:{_line('AFTER')}" in out
    assert f"test_debugger.py({_line('AFTER')})counts()" in out  # pdb shows the stopped frame
    assert "(Pdb) 11\n" in out  # p total
    assert "cursor: workflow task started at event" in out


def test_step_stops_at_the_first_line_of_workflow_code() -> None:
    _, out = _session("step\np start\ncontinue\nquit\n")
    first_stop = out.split("(Pdb)")[0]
    assert f"test_debugger.py({_line('WORKFLOW')})counts()" in first_stop  # not in the SDK
    assert "chronicle/sdk" not in first_stop
    assert "(Pdb) 10\n" in out


def test_a_divergence_stops_the_replay_with_the_precise_error() -> None:
    @workflow(name="counts")
    async def changed(start: int) -> int:
        await workflow.sleep(timedelta(seconds=1))  # CHANGED
        return start

    out = io.StringIO()
    debugger = HistoryDebugger(
        _recorded(), [changed], stdin=io.StringIO("cont\nnext\nquit\n"), stdout=out
    )
    debugger.cmdloop()
    text = out.getvalue()
    assert "!! NondeterminismError" in text
    assert f"test_debugger.py:{_line('CHANGED')}" in text
    assert "the replay stopped" in text


def test_the_cli_runs_commands_on_a_history_file() -> None:
    history = HISTORIES / "fails_with_activity_error.json"
    assert load_run(history).workflow_id
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "chronicle",
            "debug",
            str(history),
            "tests.e2e.workflows",
            "-x",
            "next; locals; cont",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "reason = 'declined'" in run.stdout
    assert "WorkflowFailed" in run.stdout
    assert "end of history" in run.stdout
