"""Run the benchmarks: ``python -m bench [all|w0|w1|w2|w3|w4|w5|la] [--database-url URL]``.

``--worker-arg=ARG`` (repeatable) passes ARG to ``chronicle worker``, e.g. for an A/B of inline
activities: ``python -m bench w1 --worker-arg=--inline-activity-budget=0``. ``--cpu`` adds, for
each workload, the CPU time of the server, Postgres, worker and bench client processes
(``bench/cpu.py``), and for W0 and W2 the CPU per workflow. W0 (W2 without activities) runs
only when named.

Starts its own Postgres (embedded unless ``--database-url`` or $CHRONICLE_DATABASE_URL is set),
a server subprocess and worker subprocesses, runs each workload, checks every result (a fast
wrong answer fails the run), and prints one table. Figures are measured, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bench import cpu, workloads
from bench.stack import Stack
from chronicle import Client, eventloop, grpc_io

TASK_QUEUE = "bench"
DEFAULT_TIMEOUT = 300.0
"""Seconds a workload may take (``--timeout``): a stuck run ends with a message, never hangs."""


@dataclass
class Row:
    """One line of the results table."""

    workload: str
    metric: str
    value: str
    target: str = ""


@dataclass
class Results:
    """Rows collected over the run."""

    rows: list[Row] = field(default_factory=list)

    def add(self, workload: str, metric: str, value: str, target: str = "") -> None:
        """Add a row and echo it, so a long run shows progress."""
        self.rows.append(Row(workload, metric, value, target))
        print(f"  {workload:<4} {metric:<44} {value:>14}  {target}", flush=True)


def ms(seconds: float) -> str:
    """Seconds as milliseconds, 1 decimal."""
    return f"{seconds * 1000:.1f} ms"


def median_p95(samples: list[float]) -> tuple[float, float]:
    """The median and the 95th percentile of ``samples``."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def check(actual: object, expected: object, what: str) -> None:
    """Fail the benchmark on a wrong result."""
    if actual != expected:
        raise SystemExit(f"{what}: wrong result {actual!r}, expected {expected!r}")


LATENCY_RUNS = 35
"""Runs of a latency workload (W0's second half, W1): 5 of warm-up, then 30 measured."""


async def _latencies(client: Client, fn: Any, steps: int, label: str) -> tuple[float, float]:
    """Median and p95 latency of ``fn(steps)`` (start to result), over 30 runs after 5 of
    warm-up, each checked to return ``steps``."""
    samples = []
    for run in range(LATENCY_RUNS):
        began = time.perf_counter()
        handle = await client.start(
            fn, steps, id=f"{label.lower()}-{uuid.uuid4()}", task_queue=TASK_QUEUE
        )
        check(await handle.result(), steps, label)
        if run >= 5:
            samples.append(time.perf_counter() - began)
    return median_p95(samples)


async def w1(client: Client, results: Results) -> None:
    """W1: a workflow of 10 sequential activities, latency over 30 runs after warm-up."""
    median, p95 = await _latencies(client, workloads.sequential, 10, "W1")
    results.add("W1", "10 sequential activities: median latency", ms(median), "target <= 15 ms")
    results.add("W1", "10 sequential activities: p95 latency", ms(p95))


W2_WORKFLOWS = 500


async def _burst(client: Client, fn: Any, expected: int, label: str) -> float:
    """Start ``W2_WORKFLOWS`` runs of ``fn`` at once, check each returns ``expected``; the wall
    time from the first start to the last result."""
    began = time.perf_counter()
    handles = await asyncio.gather(
        *(
            client.start(fn, id=f"{label.lower()}-{uuid.uuid4()}", task_queue=TASK_QUEUE)
            for _ in range(W2_WORKFLOWS)
        )
    )
    outcomes = await asyncio.gather(*(h.result() for h in handles))
    check(set(outcomes), {expected}, label)
    return time.perf_counter() - began


async def w2(client: Client, results: Results) -> None:
    """W2: 500 workflows of 3 activities started at once, one worker."""
    count = W2_WORKFLOWS
    wall = await _burst(client, workloads.three_steps, 3, "W2")
    results.add("W2", f"{count} workflows x 3 activities: wall time", f"{wall:.2f} s")
    results.add("W2", "workflows/s", f"{count / wall:.0f}", "target >= 300")
    results.add("W2", "activities/s", f"{3 * count / wall:.0f}")


async def w0(client: Client, results: Results) -> None:
    """W0 (not in the issue): W1 and W2 without their activities, workflows that return at once.
    What each workflow costs besides its steps: the start, one workflow task, the close, the
    result."""
    wall = await _burst(client, workloads.no_steps, 0, "W0")
    results.add("W0", f"{W2_WORKFLOWS} workflows x 0 activities: wall time", f"{wall:.2f} s")
    results.add("W0", "workflows/s", f"{W2_WORKFLOWS / wall:.0f}")
    median, p95 = await _latencies(client, workloads.sequential, 0, "W0")
    results.add(
        "W0", "0 activities, one at a time: median (p95) latency", f"{ms(median)} ({ms(p95)})"
    )


async def w3(client: Client, results: Results) -> None:
    """W3: one workflow of 1,000 sequential activities; W3': replay of its history."""
    from chronicle.sdk.replay import replay

    steps = 1000
    began = time.perf_counter()
    handle = await client.start(
        workloads.sequential, steps, id=f"w3-{uuid.uuid4()}", task_queue=TASK_QUEUE
    )
    check(await handle.result(), steps, "W3")
    wall = time.perf_counter() - began
    results.add("W3", f"{steps} sequential activities: wall time", f"{wall:.2f} s", "target <= 2 s")
    history = await handle.history()
    scheduled = [e.time for e in history if e.type == "ActivityScheduled"]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(scheduled)]
    # medians over 50 steps each: 10 samples are too noisy to tell a 20% difference
    early, late = statistics.median(gaps[10:60]), statistics.median(gaps[-51:-1])
    results.add("W3", "per-activity latency, steps 10-60 (median)", ms(early))
    results.add(
        "W3", "per-activity latency, steps 950-1,000 (median)", ms(late), "within 20% of step 10"
    )
    results.add(
        "W3'",
        f"replay of the {len(history)}-event history, as a worker's cache miss (median of 5)",
        ms(_median_time(lambda: _replay_as_worker(history))),
        "target <= 100 ms",
    )
    results.add(
        "W3'",
        "replay() of it, with its validation fold first (median of 5)",
        ms(_median_time(lambda: replay(history, [workloads.sequential]))),
    )


def _median_time(run: Callable[[], None], rounds: int = 5) -> float:
    """Median seconds of ``rounds`` calls of ``run``."""
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _replay_as_worker(history: list[Any]) -> None:
    """What a worker does with a run it does not hold (``sdk/_instance_lookup.py``): a new
    instance activated with the whole history. No fold: the history comes from the server,
    which folded every event it wrote; ``replay()`` folds first because its history may come
    from a file."""
    from chronicle.sdk.replay import replay_folded

    replay_folded(history, [workloads.sequential], workflow_id="w3-replay", run_id="w3-replay")


async def w4(client: Client, results: Results) -> None:
    """W4: a 1 s durable timer; how late it fires, and how late the workflow it ends completes
    (server clock, from the history; the second is issue 3's "within 100 ms of its due time")."""
    overshoots, completions = [], []
    for _ in range(10):
        handle = await client.start(
            workloads.one_timer, 1.0, id=f"w4-{uuid.uuid4()}", task_queue=TASK_QUEUE
        )
        check(await handle.result(), 1.0, "W4")
        history = await handle.history()
        started = next(e.time for e in history if e.type == "TimerStarted")
        fired = next(e.time for e in history if e.type == "TimerFired")
        completed = next(e.time for e in history if e.type == "WorkflowCompleted")
        overshoots.append((fired - started).total_seconds() - 1.0)
        completions.append((completed - started).total_seconds() - 1.0)
    median, p95 = median_p95(overshoots)
    results.add("W4", "1 s timer: overshoot (median)", ms(median), "target <= 5 ms")
    results.add("W4", "1 s timer: overshoot (p95)", ms(p95))
    median, p95 = median_p95(completions)
    results.add(
        "W4", "1 s timer: workflow completed after due (median)", ms(median), "target <= 100 ms"
    )
    results.add("W4", "1 s timer: workflow completed after due (p95)", ms(p95))


async def w5(stack: Stack, client: Client, results: Results) -> None:
    """W5: SIGKILL the worker mid-workflow; time from its death to progress on a new worker."""
    handle = await client.start(
        workloads.slow_sequential, 60, id=f"w5-{uuid.uuid4()}", task_queue=TASK_QUEUE
    )
    # polls another process's progress; nothing in this process could set an Event for it
    while sum(1 for e in await handle.history() if e.type == "ActivityCompleted") < 10:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    killed_at = time.time()
    stack.kill_workers()
    up_at = stack.start_worker()
    while True:
        history = await handle.history()
        after = [e for e in history if e.type == "ActivityCompleted" and e.time.timestamp() > up_at]
        if after:
            break
        await asyncio.sleep(0.01)
    progress_at = after[0].time.timestamp()
    check(await handle.result(), 60, "W5")
    results.add(
        "W5",
        "worker SIGKILL -> progress, after new worker up",
        ms(progress_at - up_at),
        "target <= 1 s",
    )
    results.add("W5", "worker SIGKILL -> progress, total", ms(progress_at - killed_at))


async def postgres_facts(database_url: str, results: Results) -> None:
    """Record the Postgres version and durability settings the figures were taken with."""
    conn = await asyncpg.connect(database_url)
    try:
        version = await conn.fetchval("SHOW server_version")
        fsync = await conn.fetchval("SHOW fsync")
        sync_commit = await conn.fetchval("SHOW synchronous_commit")
    finally:
        await conn.close()
    results.add("env", "Postgres version", str(version))
    results.add("env", "fsync / synchronous_commit", f"{fsync} / {sync_commit}")
    results.add("env", "CPU cores", str(os.cpu_count()))


async def la(client: Client, results: Results) -> None:
    """LA: 10 sequential local activities vs 10 regular ones, median latency each (20 runs)."""
    for label, fn in (("regular", workloads.sequential), ("local", workloads.local_sequential)):
        samples = []
        for run in range(25):
            began = time.perf_counter()
            handle = await client.start(fn, 10, id=f"la-{uuid.uuid4()}", task_queue=TASK_QUEUE)
            check(await handle.result(), 10, "LA")
            if run >= 5:
                samples.append(time.perf_counter() - began)
        median, _ = median_p95(samples)
        results.add("LA", f"10 sequential {label} activities: median", ms(median))


WORKLOADS: dict[str, Callable[..., Coroutine[Any, Any, None]]] = {
    "w0": w0,
    "w1": w1,
    "w2": w2,
    "w3": w3,
    "w4": w4,
    "la": la,
}


async def main_async(
    selected: list[str],
    database_url: str | None,
    worker_args: tuple[str, ...] = (),
    *,
    measure_cpu: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> Results:
    """Start the stack, run the selected workloads, stop the stack (``measure_cpu``: add each
    workload's CPU time per process group). A workload that has not finished after ``timeout``
    seconds ends the run with the last output of the server and workers."""
    results = Results()
    main_task = asyncio.current_task()
    assert main_task is not None
    # SIGTERM unwinds like Ctrl-C, so the stack's server, workers and Postgres are stopped.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    with (
        tempfile.TemporaryDirectory(prefix="chronicle-bench-") as tmp,
        Stack(tmp, database_url, TASK_QUEUE, worker_args) as stack,
    ):
        await postgres_facts(stack.database_url, results)
        stack.start_worker()
        client = await Client.connect(stack.address)
        try:
            for name in selected:
                before = cpu.snapshot(stack) if measure_cpu else None
                if name == "w5":
                    run = w5(stack, client, results)
                else:
                    run = WORKLOADS[name](client, results)
                deadline = asyncio.timeout(timeout)
                try:
                    async with deadline:
                        await run
                except TimeoutError:
                    if not deadline.expired():  # the workload's own error, not --timeout
                        raise
                    raise SystemExit(
                        f"bench: {name} did not finish within {timeout:g} s (--timeout); "
                        f"the stack is stopped.\n{stack.recent_output()}"
                    ) from None
                if before is not None:
                    _add_cpu(name, cpu.used(before, cpu.snapshot(stack)), results)
        finally:
            await client.close()
    return results


WORKFLOWS_PER_WORKLOAD = {"w0": W2_WORKFLOWS + LATENCY_RUNS, "w2": W2_WORKFLOWS}
"""The workflows a workload runs, for its CPU per workflow."""


def _add_cpu(workload: str, used: dict[str, float], results: Results) -> None:
    label = workload.upper()
    groups = " / ".join(cpu.GROUPS)
    results.add(label, f"CPU s: {groups}", " / ".join(f"{used[g]:.2f}" for g in cpu.GROUPS))
    workflows = WORKFLOWS_PER_WORKLOAD.get(workload)
    if workflows is not None:
        per = " / ".join(f"{used[g] / workflows * 1000:.1f}" for g in cpu.GROUPS)
        results.add(label, f"CPU ms per workflow: {groups}", per)
        total = sum(used.values()) / workflows * 1000
        results.add(label, "CPU ms per workflow, all processes", f"{total:.1f}")


def _grpc_io_name(experiments: str) -> str:
    """``polling``, ``event engine`` (gRPC's default), or ``GRPC_EXPERIMENTS`` as it is."""
    if set(grpc_io.POLLING_IO_EXPERIMENTS) <= set(experiments.split(",")):
        return "polling"
    return experiments or "event engine"


def print_table(results: Results) -> None:
    """The final table."""
    width = max(len(r.metric) for r in results.rows)
    print()
    print(f"{'':<5}{'metric':<{width}}  {'value':>14}  target")
    print("-" * (width + 40))
    for row in results.rows:
        print(f"{row.workload:<5}{row.metric:<{width}}  {row.value:>14}  {row.target}")


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "workloads",
        nargs="*",
        default=["all"],
        help="all (default: w1 w2 w3 w4 w5 la) or any of w0 w1 w2 w3 w4 w5 la",
    )
    parser.add_argument("--database-url", default=os.environ.get("CHRONICLE_DATABASE_URL"))
    parser.add_argument(
        "--worker-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an option for `chronicle worker` (repeatable), e.g. "
        "--worker-arg=--inline-activity-budget=0",
    )
    parser.add_argument(
        "--cpu", action="store_true", help="add each workload's CPU time per process (Linux)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds a workload may take before the run stops (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--grpc-io",
        choices=("polling", "event-engine"),
        default="polling",
        help="gRPC's I/O engine in every process (chronicle/grpc_io.py; default: polling)",
    )
    options = parser.parse_args()
    if options.grpc_io == "event-engine":
        os.environ["GRPC_EXPERIMENTS"] = ""  # set, so no process changes it: gRPC's default
    else:
        grpc_io.use_polling_io()
    selected = (
        ["w1", "w2", "w3", "w4", "w5", "la"] if "all" in options.workloads else options.workloads
    )
    unknown = [w for w in selected if w not in {*WORKLOADS, "w5"}]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from all w0 w1 w2 w3 w4 w5 la")
    try:
        results = eventloop.run(
            main_async(
                selected,
                options.database_url,
                tuple(options.worker_arg),
                measure_cpu=options.cpu,
                timeout=options.timeout,
            )
        )
    except (asyncio.CancelledError, KeyboardInterrupt):
        sys.exit("bench: stopped; its server, workers and Postgres were stopped too")
    if options.worker_arg:
        results.add("env", "worker options", " ".join(options.worker_arg))
    results.add("env", "gRPC I/O", _grpc_io_name(os.environ.get("GRPC_EXPERIMENTS", "")))
    print_table(results)
    sys.exit(0)


if __name__ == "__main__":
    main()
