"""The public surface: ``chronicle.__all__`` is exactly what the package exports, and it covers
every name API.md promises users (STYLE.md habit 2)."""

from __future__ import annotations

import chronicle

# The names ../shared/API.md shows in `from chronicle import ...` and in its errors section.
PROMISED = {
    "workflow", "activity", "RetryPolicy", "ApplicationError", "ActivityError",
    "ChildWorkflowError", "WorkflowFailed", "WorkflowCancelled", "WorkflowTerminated",
    "WorkflowTimedOut", "WorkflowAlreadyStarted", "WorkflowNotFound", "NondeterminismError",
    "Client", "Worker",
}  # fmt: skip


def test_all_is_sorted_unique_and_every_name_exists() -> None:
    assert list(chronicle.__all__) == sorted(set(chronicle.__all__))
    for name in chronicle.__all__:
        assert hasattr(chronicle, name), name


def test_every_public_attribute_is_in_all() -> None:
    public = {
        name
        for name, value in vars(chronicle).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "").startswith("chronicle")
        and not isinstance(value, type(chronicle))  # submodules are reached as chronicle.x
    }
    assert public <= set(chronicle.__all__), sorted(public - set(chronicle.__all__))


def test_the_names_api_md_promises_are_exported() -> None:
    assert set(chronicle.__all__) >= PROMISED, sorted(PROMISED - set(chronicle.__all__))
