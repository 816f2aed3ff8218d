"""Profile the server and the worker under a workload: ``python -m bench.profile [w1|w2] [secs]``.

Starts the benchmark stack, attaches ``py-spy record`` (pip install py-spy; needs ptrace
permission) to the server and worker processes, repeats the workload for ``secs`` seconds and
prints each process's hottest functions (own time, then including callees). Raw profiles are
kept in ``/tmp/chronicle-profile-*.txt`` (py-spy's "raw" collapsed-stack format).
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import __main__ as bench
from bench.stack import Stack
from chronicle import Client, eventloop, grpc_io


def _top(path: Path, limit: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    out = [f"{path.name}: {samples} samples", "  own time:"]
    out += [f"    {100 * c / samples:5.1f}%  {f}" for f, c in own.most_common(limit)]
    out.append("  including callees:")
    out += [f"    {100 * c / samples:5.1f}%  {f}" for f, c in total.most_common(limit)]
    return "\n".join(out)


def _start_spies(
    spy: str, targets: dict[str, int], outputs: dict[str, Path]
) -> list[subprocess.Popen[bytes]]:
    spies = []
    for name, pid in targets.items():
        argv = [spy, "record", "-p", str(pid), "-f", "raw", "-o", str(outputs[name])]
        argv += ["-r", "200", "--nonblocking"]
        spies.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    return spies


def _stop_spies(spies: list[subprocess.Popen[bytes]]) -> None:
    for process in spies:
        process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        process.wait(30)


async def _repeat(client: Client, workload: str, seconds: float) -> None:
    results = bench.Results()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await bench.WORKLOADS[workload](client, results)


async def main_async(workload: str, seconds: float) -> None:
    """Run ``workload`` for ``seconds`` under py-spy and print the profiles."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    with (
        tempfile.TemporaryDirectory(prefix="chronicle-profile-") as tmp,
        Stack(tmp, None, bench.TASK_QUEUE) as stack,
    ):
        stack.start_worker()
        assert stack.server is not None
        targets = {"server": stack.server.pid, "worker": stack.workers[0].pid}
        client = await Client.connect(stack.address)
        outputs = {name: Path(f"/tmp/chronicle-profile-{workload}-{name}.txt") for name in targets}
        spies = _start_spies(spy, targets, outputs)
        try:
            await _repeat(client, workload, seconds)
        finally:
            _stop_spies(spies)
            await client.close()
        for out in outputs.values():
            print(_top(out))


def main() -> None:
    """Command-line entry point."""
    grpc_io.use_polling_io()
    workload = sys.argv[1] if len(sys.argv) > 1 else "w2"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
    eventloop.run(main_async(workload, seconds))


if __name__ == "__main__":
    main()
