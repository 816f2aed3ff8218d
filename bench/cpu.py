"""CPU time per process of a benchmark stack, read from /proc (Linux): ``python -m bench --cpu``.

Groups: the server subprocess, the worker subprocesses, the bench client (this process) and
Postgres (the postmaster's children: backends, WAL writer, checkpointer, autovacuum). Postgres
is counted only when the stack started it (embedded); with ``--database-url`` its processes
may not be on this machine.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.stack import Stack

GROUPS = ("server", "postgres", "worker", "bench client")


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _cpu_seconds(pid: int) -> float:
    fields = _stat(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_pids(stack: Stack) -> list[int]:
    """The postmaster and its children, when the stack runs an embedded Postgres."""
    pgdata = stack.postgres_data
    if pgdata is None:
        return []
    try:
        postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return []
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == postmaster:
                children.append(int(entry.name))
    return [postmaster, *children]


def snapshot(stack: Stack) -> dict[str, dict[int, float]]:
    """CPU seconds so far of every process of each group, by pid."""
    pids = {
        "server": [stack.server.pid] if stack.server is not None else [],
        "postgres": _postgres_pids(stack),
        "worker": [w.pid for w in stack.workers],
        "bench client": [os.getpid()],
    }
    return {group: {pid: _cpu_seconds(pid) for pid in pids[group]} for group in GROUPS}


def used(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]
) -> dict[str, float]:
    """CPU seconds each group used between two snapshots (a process that started in between
    counts from zero; one that ended in between is not counted)."""
    return {
        group: sum(cpu - before[group].get(pid, 0.0) for pid, cpu in after[group].items())
        for group in GROUPS
    }
