"""``chronicle.grpc_io``: Chronicle's processes choose gRPC's poll-based I/O, unless told."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import pytest

from chronicle import grpc_io

OURS = ",".join(grpc_io.POLLING_IO_EXPERIMENTS)
CHANNEL = (
    "import asyncio, grpc\n"
    "async def main():\n"
    "    channel = grpc.aio.insecure_channel('127.0.0.1:9')\n"
    "    await channel.close()\n"
    "asyncio.run(main())\n"
)


def _bare_environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    return {**env, **extra}


def _run(program: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """``program`` in a fresh interpreter without ``GRPC_EXPERIMENTS`` (plus ``extra``)."""
    return subprocess.run(
        [sys.executable, "-c", program],
        env=_bare_environment(**extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_sets_the_experiments_when_the_environment_has_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(grpc_io, "grpc_version", lambda: (1, 85, 1))
    env: dict[str, str] = {}
    assert grpc_io.polling_io_environment(env)
    assert env == {"GRPC_EXPERIMENTS": OURS}


@pytest.mark.parametrize("given", ["", "-event_engine_client", "some_other_experiment"])
def test_a_value_in_the_environment_is_kept(monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    monkeypatch.setattr(grpc_io, "grpc_version", lambda: (1, 85, 1))
    env = {"GRPC_EXPERIMENTS": given}
    assert not grpc_io.polling_io_environment(env)
    assert env == {"GRPC_EXPERIMENTS": given}


def test_nothing_is_set_for_a_grpcio_whose_default_is_polling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(grpc_io, "grpc_version", lambda: (1, 79, 0))
    env: dict[str, str] = {}
    assert not grpc_io.polling_io_environment(env)
    assert env == {}


def test_use_polling_io_runs_the_command_again_with_the_variable_set() -> None:
    """The command starts over (its first line runs twice) and then sees the variable from the
    start, before anything imported gRPC; with the variable given, it runs once."""
    program = (
        "import os, sys\n"
        "print('start', flush=True)\n"
        "from chronicle import grpc_io\n"
        "grpc_io.use_polling_io()\n"
        "print('running with', os.environ.get('GRPC_EXPERIMENTS'), flush=True)\n"
    )
    done = _run(program)
    assert done.stdout.splitlines() == ["start", "start", f"running with {OURS}"]
    given = _run(program, GRPC_EXPERIMENTS="")
    assert given.stdout.splitlines() == ["start", "running with "]


def test_a_rewritten_command_line_is_not_run_again() -> None:
    """A host program that set ``sys.argv`` itself: running the original command line again
    would run the host, so nothing is changed."""
    program = (
        "import os, sys\n"
        "print('start', flush=True)\n"
        "sys.argv = ['chronicle', 'worker', 'app']\n"
        "from chronicle import grpc_io\n"
        "grpc_io.use_polling_io()\n"
        "print('running with', os.environ.get('GRPC_EXPERIMENTS'), flush=True)\n"
    )
    done = _run(program)
    assert done.stdout.splitlines() == ["start", "running with None"]


def test_a_grpcio_without_package_metadata_is_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert grpc_io.grpc_version() == ()
    env: dict[str, str] = {}
    assert not grpc_io.polling_io_environment(env)
    assert env == {}


def test_the_installed_grpcio_knows_every_experiment_turned_off() -> None:
    """gRPC logs ``Unknown experiment: NAME`` for a name it does not have. When a grpcio upgrade
    removes these experiments, this fails: drop them (and grpc_io.py) or find the new knob."""
    if grpc_io.grpc_version() < grpc_io.EVENT_ENGINE_DEFAULT_SINCE:
        pytest.skip("this grpcio does I/O by polling already; nothing is turned off")
    done = _run(CHANNEL, GRPC_EXPERIMENTS=OURS)
    assert "Unknown experiment" not in done.stderr, done.stderr
    # The check itself works: a made-up name is reported.
    made_up = _run(CHANNEL, GRPC_EXPERIMENTS="-no_such_experiment")
    assert "Unknown experiment: no_such_experiment" in made_up.stderr
