"""Testing helpers: replay histories against today's code, from files, objects or a server.

```python
from chronicle import testing

testing.replay("tests/histories/order-1.json", workflows=[order])       # raises on divergence
testing.replay(["a.json", "b.json"], workflows=[order])                 # many histories
results = await testing.replay_from_server(client, [order],
                                           query="status = 'running' AND type = 'order'")
broken = [r for r in results if not r.ok]                                # the pre-deploy gate
```

A history is a path to a JSON export (``chronicle workflow history ID --json``), its JSON text,
the parsed document, a list of ``Event``, or a ``RecordedRun``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from chronicle.history.events import Event
from chronicle.sdk.errors import ChronicleError
from chronicle.sdk.replay import RecordedRun, ReplayResult, replay_from_server, replay_histories
from chronicle.sdk.testing import load_history, load_run

__all__ = [
    "History",
    "RecordedRun",
    "ReplayFailed",
    "ReplayResult",
    "load_history",
    "load_run",
    "replay",
    "replay_from_server",
]

History: TypeAlias = str | Path | dict[str, Any] | Sequence[Event] | RecordedRun
"""Anything ``replay`` reads as one run's history."""


class ReplayFailed(ChronicleError):
    """Some of several histories do not replay against today's code; ``results`` has all."""

    def __init__(self, results: list[ReplayResult]) -> None:
        self.results = results
        self.failures = [r for r in results if not r.ok]
        lines = "\n".join(f"  {r}" for r in self.failures)
        super().__init__(
            f"{len(self.failures)} of {len(results)} histories do not replay:\n{lines}"
        )


def _run(history: History) -> RecordedRun:
    if isinstance(history, RecordedRun):
        return history
    if isinstance(history, str | Path | dict):
        return load_run(history)
    return RecordedRun(list(history))


def _histories(history: History | Iterable[History]) -> tuple[bool, list[History]]:
    """(True, [it]) for one history, (False, the list) for several."""
    if isinstance(history, str | Path | dict | RecordedRun):
        return True, [history]
    items: list[Any] = list(history)
    if not items or isinstance(items[0], Event):
        return True, [items]
    return False, items


def replay(
    history: History | Iterable[History],
    workflows: Sequence[Callable[..., Any]],
    *,
    raise_on_failure: bool = True,
) -> list[ReplayResult]:
    """Replay one history, or each of several, against ``workflows``.

    Returns one ``ReplayResult`` per history. With ``raise_on_failure`` (the default, for
    tests), a single history that diverges raises its own error (``NondeterminismError`` naming
    the event, what was recorded and what the code did, with both call sites); several raise
    ``ReplayFailed`` listing every one that fails.
    """
    single, histories = _histories(history)
    results = replay_histories([_run(h) for h in histories], workflows)
    failures = [r for r in results if r.error is not None]
    if raise_on_failure and failures:
        if single and failures[0].error is not None:
            raise failures[0].error
        raise ReplayFailed(results)
    return results
