"""``state.evolve``: the fold's copy-with-changes, equal to ``dataclasses.replace``."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from chronicle.history import state
from chronicle.history.values import RetryPolicy
from tests.history.history_strategies import populated

STATE_CLASSES = [
    cls
    for cls in vars(state).values()
    if dataclasses.is_dataclass(cls) and cls.__module__ == state.__name__
]


@pytest.mark.parametrize("cls", STATE_CLASSES, ids=lambda c: c.__name__)
def test_evolve_equals_replace_for_every_field(cls: type[Any]) -> None:
    full, empty = populated(cls), cls(**_required(cls))
    for f in dataclasses.fields(cls):
        change = {f.name: getattr(full, f.name)}
        copied = state.evolve(empty, **change)
        assert copied == dataclasses.replace(empty, **change)
        assert type(copied) is cls
        assert copied is not empty
    assert state.evolve(full) == full
    assert state.evolve(empty, **_as_kwargs(full)) == full


def test_evolve_leaves_the_original_unchanged() -> None:
    before = state.WorkflowState(next_event_id=3)
    after = state.evolve(before, next_event_id=4, workflow_type="wf")
    assert (before.next_event_id, before.workflow_type) == (3, "")
    assert (after.next_event_id, after.workflow_type) == (4, "wf")


def test_an_unknown_field_is_an_error() -> None:
    with pytest.raises(AttributeError):
        state.evolve(state.WorkflowState(), next_event=4)


def test_classes_it_cannot_copy_faithfully_are_refused() -> None:
    with pytest.raises(TypeError, match="__post_init__"):
        state.evolve(RetryPolicy())  # validates in __post_init__

    @dataclasses.dataclass(frozen=True)
    class Unslotted:
        x: int = 0

    with pytest.raises(TypeError, match="not a frozen, slotted dataclass"):
        state.evolve(Unslotted())

    @dataclasses.dataclass(frozen=True, slots=True)
    class Derived:
        x: int = 0
        y: int = dataclasses.field(default=0, init=False)

    with pytest.raises(TypeError, match="fields that __init__ does not set"):
        state.evolve(Derived())

    @dataclasses.dataclass(frozen=True, slots=True)
    class Custom:
        x: int = 0

        def __init__(self, x: int = 0) -> None:
            object.__setattr__(self, "x", abs(x))

    with pytest.raises(TypeError, match="an __init__ of its own"):
        state.evolve(Custom())


def _required(cls: type[Any]) -> dict[str, Any]:
    full = populated(cls)
    return {
        f.name: getattr(full, f.name)
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }


def _as_kwargs(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
