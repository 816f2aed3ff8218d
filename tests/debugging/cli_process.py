"""Run ``python -m chronicle ...`` as an asyncio subprocess (the in-process server keeps serving
on the test's event loop while the command runs)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


async def start_cli(
    *argv: str, stdout: int = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    """Start the CLI with ``argv``; stderr is a pipe, and so is stdout unless given (a file
    descriptor)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chronicle",
        *argv,
        cwd=REPO,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
    )


async def run_cli(*argv: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """Run the CLI to its end: (exit status, stdout, stderr)."""
    process = await start_cli(*argv)
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
