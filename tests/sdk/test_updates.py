"""Update handlers in the workflow instance, driven by hand-made histories (no server)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chronicle.history import commands as cmd
from chronicle.history import events as ev
from chronicle.history.payloads import from_payload, to_payload, to_payloads
from chronicle.sdk.errors import ApplicationError
from chronicle.sdk.replay import replay
from chronicle.sdk.workflow import workflow
from tests.sdk.sdk_histories import Sim, result_of


@workflow
async def counter(late_handler: bool) -> int:
    count = [0]

    async def add(by: int) -> int:
        await workflow.sleep(timedelta(seconds=5))
        count[0] += by
        return count[0]

    def positive(by: int) -> None:
        if by <= 0:
            raise ApplicationError("must be positive")

    if late_handler:
        await workflow.sleep(timedelta(seconds=1))
    workflow.on_update("add", add, validator=positive)
    await workflow.wait_condition(lambda: count[0] >= 3)
    return count[0]


def _accept(sim: Sim, update_id: str, *args: object, name: str = "add") -> ev.Event:
    return sim.add(
        ev.UpdateAccepted(update_id=update_id, update_name=name, input=to_payloads(args))
    )


def test_an_update_runs_its_handler_and_replays_without_nondeterminism() -> None:
    sim = Sim(counter, False)
    _accept(sim, "u1", 3)  # accepted before the first task: waits for the registration
    [timer] = sim.step()
    assert isinstance(timer, cmd.StartTimer)
    sim.timer_fired(1)
    done, complete = sim.step()
    assert isinstance(done, cmd.CompleteUpdate)
    assert done.update_id == "u1"
    assert done.result is not None
    assert from_payload(done.result) == 3
    assert result_of([complete]) == 3
    sim.check()
    replay(sim.events, [counter])


def test_validation_is_read_only_and_names_the_problem() -> None:
    sim = Sim(counter, False)
    sim.step()
    sim.instance.validate_update("add", [to_payload(1)])
    with pytest.raises(ApplicationError, match="must be positive"):
        sim.instance.validate_update("add", [to_payload(0)])
    with pytest.raises(ApplicationError, match=r"unknown update 'sub' \(registered: add\)"):
        sim.instance.validate_update("sub", [])
    with pytest.raises(ApplicationError, match="got 0 argument"):
        sim.instance.validate_update("add", [])
    with pytest.raises(ApplicationError, match="int"):
        sim.instance.validate_update("add", [to_payload("x")])


def test_an_update_without_a_handler_at_the_end_of_its_activation_fails() -> None:
    sim = Sim(counter, True)  # registers its handler only after a timer
    _accept(sim, "early", 1)
    timer, rejected = sim.step()
    assert isinstance(timer, cmd.StartTimer)
    assert isinstance(rejected, cmd.CompleteUpdate)
    assert rejected.failure is not None
    assert "unknown update 'add' (registered: none)" in rejected.failure.message
    sim.check()
    replay(sim.events, [counter])
