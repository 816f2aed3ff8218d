"""Versioning: `workflow.patched` and `workflow.deprecate_patch` let code change under running
workflows. The old history is the golden `add_steps.json`, recorded by a real server and worker
with `tests.e2e.workflows.add_steps` (one `increment` activity per step)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from chronicle import testing
from chronicle.history import commands as cmd
from chronicle.history import events as ev
from chronicle.history.payloads import from_payload
from chronicle.sdk.errors import NondeterminismError
from chronicle.sdk.workflow import workflow
from tests.e2e.workflows import increment
from tests.sdk.sdk_histories import Sim, result_of

OLD = Path(__file__).resolve().parents[1] / "histories" / "add_steps.json"


def _line(marker: str) -> int:
    lines = Path(__file__).read_text().splitlines()
    return 1 + next(i for i, text in enumerate(lines) if text.endswith(f"# {marker}"))


@workflow(name="add_steps")
async def unpatched(start: int, steps: int) -> int:
    value = start
    await workflow.sleep(timedelta(seconds=1))  # UNPATCHED_SLEEP
    for _ in range(steps):
        value = await increment(value)
    return value


@workflow(name="add_steps")
async def patched(start: int, steps: int) -> int:
    value = start
    if workflow.patched("cool-down"):
        await workflow.sleep(timedelta(seconds=1))
    for _ in range(steps):
        value = await increment(value)
    return value


@workflow(name="add_steps")
async def deprecated(start: int, steps: int) -> int:
    value = start
    workflow.deprecate_patch("cool-down")
    await workflow.sleep(timedelta(seconds=1))  # DEPRECATED_SLEEP
    for _ in range(steps):
        value = await increment(value)
    return value


@workflow(name="add_steps")
async def patch_removed(start: int, steps: int) -> int:
    value = start
    await workflow.sleep(timedelta(seconds=1))
    for _ in range(steps):
        value = await increment(value)
    return value


def _recorded_with(fn: object) -> list[ev.Event]:
    """A complete history of ``add_steps(1, 1)`` run by ``fn`` (the cool-down timer included)."""
    sim = Sim(fn, 1, 1)
    commands = sim.step()
    assert any(isinstance(c, cmd.StartTimer) for c in commands)
    sim.timer_fired(1)
    sim.step()
    sim.activity_completed(1, 2)
    assert result_of(sim.step()) == 2
    return sim.events


def test_an_old_history_replays_cleanly_with_patched_code() -> None:
    [result] = testing.replay(OLD, workflows=[patched])
    assert result.ok


def test_an_old_history_fails_with_the_precise_error_without_the_patch() -> None:
    with pytest.raises(NondeterminismError) as caught:
        testing.replay(OLD, workflows=[unpatched])
    error = caught.value
    assert error.event_id == 5
    assert error.recorded.startswith("ActivityScheduled(activity_type='increment', seq=1)")
    assert "tests/e2e/workflows.py:82 in add_steps" in error.recorded
    assert error.attempted == (
        f"StartTimer(seq=1) at tests/debugging/test_versioning.py:{_line('UNPATCHED_SLEEP')} "
        "in unpatched"
    )
    assert "workflow 'golden-add_steps'" in str(error)


def test_new_runs_record_the_patch_and_replay_with_patched_code() -> None:
    events = _recorded_with(patched)
    markers = [e.attributes for e in events if isinstance(e.attributes, ev.MarkerRecorded)]
    assert [(m.marker_name, from_payload(m.details["id"])) for m in markers] == [
        ("patch", "cool-down")
    ]
    assert testing.replay(events, workflows=[patched])[0].ok


def test_deprecate_patch_replays_patched_histories_and_still_records_the_marker() -> None:
    patched_history = _recorded_with(patched)
    assert testing.replay(patched_history, workflows=[deprecated])[0].ok
    new_history = _recorded_with(deprecated)
    assert any(isinstance(e.attributes, ev.MarkerRecorded) for e in new_history)
    # during a rolling deploy, workers still on `if patched(...)` replay the new runs:
    assert testing.replay(new_history, workflows=[patched])[0].ok


def test_deprecate_patch_on_a_pre_patch_history_names_the_divergence() -> None:
    with pytest.raises(NondeterminismError) as caught:
        testing.replay(OLD, workflows=[deprecated])
    assert f"test_versioning.py:{_line('DEPRECATED_SLEEP')} in deprecated" in str(caught.value)


def test_removing_the_patch_call_keeps_patched_histories_replaying() -> None:
    assert testing.replay(_recorded_with(patched), workflows=[patch_removed])[0].ok
    assert testing.replay(_recorded_with(deprecated), workflows=[patch_removed])[0].ok
