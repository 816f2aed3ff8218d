"""What the determinism guard rails cost: ``python -m bench.guards``.

Runs the same workload in alternating blocks with the guards installed (as every worker has
them) and uninstalled, and prints both timings, then the cost of one guarded ``time.time()``
outside workflow code. No server is needed: the workload is workflow code itself, replayed
from a synthetic history. Per activation the
workflow does typical deterministic work (dict/JSON work, ``workflow.now()``, a logger call that
reads the clock inside ``logging``, pydantic-free arithmetic); the guards wrap ``time.time``
and friends, so the only cost on this path is their fast check.
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import UTC, datetime

RUNS = 15
ACTIVATIONS = 300


def main() -> None:
    """Alternate blocks with the guards installed and uninstalled in one process (so load on
    the machine hits both alike) and print the best block of each (the least disturbed)."""
    from chronicle.history import events as ev
    from chronicle.history.payloads import to_payloads
    from chronicle.sdk import _guards, _instance
    from chronicle.sdk.replay import replay
    from chronicle.sdk.workflow import workflow

    _instance.install_guards = lambda: None  # type: ignore[attr-defined]  # the bench decides

    @workflow(name="busy")
    async def busy(n: int) -> int:
        total = 0
        for i in range(n):
            record = {"i": i, "at": workflow.now().isoformat(), "tags": ["a", "b"]}
            total += len(json.dumps(record))
            time.perf_counter()  # not guarded: the cheapest library call, for scale
        workflow.logger.debug("done %d", total)
        return total

    now = datetime(2024, 1, 1, tzinfo=UTC)
    history = [
        ev.Event(
            id=1,
            time=now,
            attributes=ev.WorkflowStarted(
                workflow_type="busy", task_queue="q", input=to_payloads([50])
            ),
        ),
        ev.Event(id=2, time=now, attributes=ev.WorkflowTaskScheduled(task_queue="q")),
        ev.Event(id=3, time=now, attributes=ev.WorkflowTaskStarted(scheduled_event_id=2)),
    ]

    def block() -> float:
        began = time.perf_counter()
        for _ in range(ACTIVATIONS):
            replay(history, [busy])
        return (time.perf_counter() - began) / ACTIVATIONS

    block()  # warm-up
    samples: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(RUNS):
        for guarded in (False, True):
            if guarded:
                _guards.install()
            else:
                _guards.uninstall()
            samples[guarded].append(block())
    off, on = samples[False], samples[True]
    for name, values in (("guards off", off), ("guards on", on)):
        print(
            f"{name:<11} best {min(values) * 1e6:7.1f} µs, median "
            f"{statistics.median(values) * 1e6:7.1f} µs per activation"
        )
    print(f"overhead (best): {(min(on) / min(off) - 1) * 100:+.1f} %  ({RUNS} blocks each)")

    def clock_calls() -> float:
        began = time.perf_counter()
        for _ in range(200_000):
            time.time()
        return (time.perf_counter() - began) / 200_000

    _guards.uninstall()
    bare = min(clock_calls() for _ in range(5))
    _guards.install()
    wrapped = min(clock_calls() for _ in range(5))
    print(
        f"time.time() outside workflow code: {bare * 1e9:.0f} ns bare, {wrapped * 1e9:.0f} ns "
        "guarded (activities, the worker itself)"
    )


if __name__ == "__main__":
    main()
