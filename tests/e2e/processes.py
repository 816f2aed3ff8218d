"""Real server and worker subprocesses for end-to-end tests, so tests can SIGKILL them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ManagedProcess:
    """A child process whose combined output is collected, waited for by a marker line."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.output: list[str] = []
        self._ready = threading.Event()
        self._marker = ""
        self.process: subprocess.Popen[str] | None = None

    def start(self, ready_marker: str = "", timeout: float = 30.0) -> ManagedProcess:
        """Start the process; with ``ready_marker``, wait until a line contains it."""
        self._marker = ready_marker
        self._ready.clear()
        self.process = subprocess.Popen(
            self.argv,
            cwd=REPO_ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump, args=(self.process,), daemon=True).start()
        if ready_marker and not self._ready.wait(timeout):
            self.kill()
            raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.log()}")
        return self

    def _pump(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.output.append(line)
            if self._marker and self._marker in line:
                self._ready.set()

    def log(self) -> str:
        """Everything the process printed so far."""
        return "".join(self.output[-200:])

    def kill(self) -> None:
        """SIGKILL the process (no clean-up of any kind) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM the process and wait for it to exit; returns its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.process is not None and self.process.poll() is None


class ServerProcess(ManagedProcess):
    """A Chronicle server subprocess on a fixed port, so it can be killed and started again."""

    def __init__(self, database_url: str, port: int) -> None:
        argv = [sys.executable, "-m", "chronicle.server", "--database-url", database_url]
        super().__init__("server", [*argv, "--port", str(port)])
        self.database_url = database_url
        self.port = port

    @property
    def address(self) -> str:
        """host:port for clients and workers."""
        return f"127.0.0.1:{self.port}"

    def start_listening(self, timeout: float = 30.0) -> ServerProcess:
        """Start (or restart) the server and wait until it listens."""
        self.start("listening on", timeout)
        return self


def start_worker(
    address: str, module: str, task_queue: str, *options: str, **env: str
) -> ManagedProcess:
    """Start ``chronicle worker MODULE [OPTIONS]`` as a subprocess (``env`` added to its
    environment)."""
    argv = [sys.executable, "-m", "chronicle", "worker", module, "--task-queue", task_queue]
    argv += options
    worker = ManagedProcess("worker", [*argv, "--address", address], env=env)
    worker.start()
    time.sleep(0)  # the worker needs no readiness: tasks wait in Postgres until it polls
    return worker
