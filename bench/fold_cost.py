"""What the server's fold costs per event: ``python -m bench.fold_cost [--steps N]``.

Folds a W3-like history (per step: a workflow task scheduled, started and completed, an activity
scheduled and completed; 5 events) with ``history.fold`` and prints the median time per event.
The server folds each step's new events onto the run's snapshot (``transition.plan``), so this
is a server cost per event, not a replay (replays run in the worker). Figures, not assertions.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

from chronicle.history import events as ev
from chronicle.history.fold import fold
from chronicle.history.values import Payload

ROUNDS = 15


def w3_history(steps: int) -> list[ev.Event]:
    """WorkflowStarted, then ``steps`` steps of 5 events each."""
    now = datetime.now(UTC)
    events: list[ev.Event] = []

    def add(attributes: ev.EventAttributes) -> int:
        events.append(ev.Event(id=len(events) + 1, time=now, attributes=attributes))
        return len(events)

    add(
        ev.WorkflowStarted(
            workflow_type="sequential",
            task_queue="bench",
            workflow_task_timeout=timedelta(seconds=10),
            input=(Payload(data=b"[1000]"),),
        )
    )
    for step in range(1, steps + 1):
        scheduled = add(ev.WorkflowTaskScheduled(task_queue="bench"))
        started = add(ev.WorkflowTaskStarted(scheduled_event_id=scheduled))
        completed = add(
            ev.WorkflowTaskCompleted(scheduled_event_id=scheduled, started_event_id=started)
        )
        activity = add(
            ev.ActivityScheduled(
                seq=step,
                activity_id=str(step),
                activity_type="inc",
                task_queue="bench",
                workflow_task_completed_event_id=completed,
            )
        )
        add(ev.ActivityCompleted(scheduled_event_id=activity, result=Payload(data=b"1")))
    return events


def main() -> None:
    """Parse arguments, measure, print the figure."""
    parser = argparse.ArgumentParser(prog="python -m bench.fold_cost", description=__doc__)
    parser.add_argument("--steps", type=int, default=1000, help="steps of 5 events (1000)")
    steps = parser.parse_args().steps
    events = w3_history(steps)
    times = []
    for _ in range(ROUNDS):
        began = time.perf_counter()
        fold(events)
        times.append(time.perf_counter() - began)
    median = statistics.median(times)
    per_event = median / len(events) * 1e6
    print(f"fold of {len(events)} events: {median * 1000:.1f} ms, {per_event:.2f} µs per event")


if __name__ == "__main__":
    main()
