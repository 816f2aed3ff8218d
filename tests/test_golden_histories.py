"""Golden histories (tests/histories/*.json, recorded by ``python -m tests.histories.generate``)
replay against today's workflow code; a changed workflow is caught with a precise error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chronicle import NondeterminismError, workflow
from chronicle.sdk.testing import load_history, replay_json
from tests.e2e import workflows as wf
from tests.e2e.semantics_workflows import SEMANTICS_WORKFLOWS
from tests.e2e.test_core import ALL_WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_are_golden_histories() -> None:
    assert len(HISTORIES) >= 7


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
def test_golden_history_replays_cleanly(path: Path) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["format"] == "chronicle-history"
    assert document["version"] == 1
    events = load_history(path)
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    replay_json(path, [*ALL_WORKFLOWS, *SEMANTICS_WORKFLOWS])


def test_the_semantics_history_holds_every_event_kind_of_the_semantics_issue() -> None:
    """semantics_everything.json (+ semantics_continue_as_new.json) cover timers, signals,
    children, external signals, cancellation, patches and continue-as-new."""
    kinds = set()
    for name in ("semantics_everything", "semantics_continue_as_new"):
        kinds |= {
            e.type for e in load_history(Path(__file__).parent / "histories" / f"{name}.json")
        }
    assert kinds >= {
        "MarkerRecorded",
        "TimerStarted",
        "TimerFired",
        "TimerCanceled",
        "SignalReceived",
        "ChildWorkflowInitiated",
        "ChildWorkflowStarted",
        "ChildWorkflowCompleted",
        "ExternalSignalInitiated",
        "ExternalSignalResolved",
        "WorkflowCancelRequested",
        "ActivityScheduled",
        "ActivityCompleted",
        "WorkflowCompleted",
        "WorkflowContinuedAsNew",
    }


@workflow(name="add_steps")
async def add_steps_calling_another_activity(start: int, steps: int) -> int:
    """add_steps, changed: calls slow_increment where the history recorded increment."""
    value = start
    for _ in range(steps):
        value = await wf.slow_increment(value)
    return value


@workflow(name="add_steps")
async def add_steps_sleeping_first(start: int, steps: int) -> int:
    """add_steps, changed: starts a timer where the history recorded an activity."""
    await workflow.sleep(1)
    return start + steps


def test_a_changed_activity_is_a_nondeterminism_error_naming_both_sides() -> None:
    with pytest.raises(NondeterminismError) as raised:
        replay_json(
            Path(__file__).parent / "histories" / "add_steps.json",
            [add_steps_calling_another_activity],
        )
    message = str(raised.value)
    assert "golden-add_steps" in message  # the workflow id recorded in the file
    assert "at event 5" in message
    assert "increment" in message
    assert "slow_increment" in message
    assert "tests/e2e/workflows.py:" in message  # where the history's command came from
    assert "test_golden_histories.py:" in message  # where today's code diverged


def test_a_timer_instead_of_an_activity_is_a_nondeterminism_error() -> None:
    with pytest.raises(NondeterminismError) as raised:
        replay_json(
            Path(__file__).parent / "histories" / "add_steps.json", [add_steps_sleeping_first]
        )
    message = str(raised.value)
    assert "ActivityScheduled" in message or "ScheduleActivity" in message
    assert "Timer" in message
