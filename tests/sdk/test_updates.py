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


@workflow
async def registrar() -> list[str]:
    pings: list[str] = []

    def ping(value: str) -> None:
        pings.append(value)

    def register(how: str) -> None:
        """A validator (and, as ``sneak``, a query handler) that registers handlers."""
        if how == "signal":
            workflow.on_signal("ping", ping)
        elif how == "query":
            workflow.on_query("peek", lambda: "leaked")
        elif how == "update":
            workflow.on_update("later", lambda: None)
        elif how == "caught":  # swallowing the refusal does not make the change pass
            try:
                workflow.on_query("peek", lambda: "leaked")
            except ApplicationError:
                pass

    def sneak() -> str:
        register("query")
        return "sneaked"

    workflow.on_update("register", lambda how: None, validator=register)
    workflow.on_query("sneak", sneak)
    await workflow.wait_condition(lambda: bool(pings))
    return pings


def test_registering_a_handler_in_a_validator_or_query_is_refused_and_registers_nothing() -> None:
    """Registering a handler changes the workflow, which replay would not repeat: inside a
    read-only call it fails the call (as Temporal's read-only context does) and leaves
    nothing registered, also when the call catches the error."""
    sim = Sim(registrar)
    assert sim.step() == []
    for how in ("signal", "query", "update", "caught"):
        with pytest.raises(ApplicationError, match=r"tried to set the handler of") as refused:
            sim.instance.validate_update("register", [to_payload(how)])
        assert refused.value.type == "InvalidQueryHandler"
        assert "validator of update 'register'" in str(refused.value)
    with pytest.raises(ApplicationError, match=r"query handler 'sneak' tried to set") as refused:
        sim.instance.query("sneak", [])
    assert refused.value.type == "InvalidQueryHandler"
    with pytest.raises(ApplicationError, match=r"unknown query 'peek'"):
        sim.instance.query("peek", [])
    with pytest.raises(ApplicationError, match=r"unknown update 'later'"):
        sim.instance.validate_update("later", [])
    sim.signal("ping", "a")  # no handler was registered: buffered, the workflow waits on
    assert sim.step() == []
    sim.check()
    replay(sim.events, [registrar])
