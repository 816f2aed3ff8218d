"""The ``chronicle`` command line: run a server, run a worker, start and inspect workflows.

```
chronicle server start-dev [--port 7070] [--db-dir DIR]
chronicle server start --database-url postgresql://... [--host H] [--port 7070]
chronicle worker MODULE --task-queue Q
chronicle workflow start TYPE --id ID --task-queue Q [--input JSON ...]
chronicle workflow result|describe|history|cancel|terminate ID
chronicle workflow signal|query|update ID NAME [--input JSON ...]
chronicle workflow list [--query Q]
chronicle replay [HISTORY.json ...] MODULE | MODULE --workflow-id ID | MODULE --query Q
chronicle debug ID|HISTORY.json MODULE
```

Every failure prints one line on stderr (``error: ...``) and exits non-zero; no tracebacks. A
reader that goes away (``chronicle workflow history ID | head``) ends the command quietly with
status 141, as a Unix tool killed by ``SIGPIPE`` would.
The CLI is the one place that sees both the SDK and the server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

import grpc

from chronicle import grpc_io
from chronicle.cli import _debug, _replay, _server, _worker, _workflow
from chronicle.cli._common import CommandError
from chronicle.history.errors import HistoryError
from chronicle.sdk._grpc import default_address
from chronicle.sdk.errors import ChronicleError

__all__ = ["build_parser", "main"]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE: what a shell reports for a tool whose reader went away."""


def _add_connection_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """``--address`` and ``--namespace``; below the top level they default to SUPPRESS so the
    value given before the command stands unless the option is repeated after it."""
    address_default = None if top_level else argparse.SUPPRESS
    namespace_default = (
        os.environ.get("CHRONICLE_NAMESPACE", "default") if top_level else argparse.SUPPRESS
    )
    parser.add_argument(
        "--address",
        default=address_default,
        help=f"server address (default: $CHRONICLE_ADDRESS or {default_address()})",
    )
    parser.add_argument(
        "--namespace",
        default=namespace_default,
        help="namespace (default: $CHRONICLE_NAMESPACE or 'default')",
    )


CLIENT_COMMANDS = ("worker", "workflow", "replay", "debug")
"""Top-level commands that talk to a server as a client (and so take --address/--namespace)."""


def _leaf_parsers(
    parser: argparse.ArgumentParser, only: tuple[str, ...] = ()
) -> list[argparse.ArgumentParser]:
    """Every parser below ``parser`` (under the commands ``only``, if given) without subcommands."""
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:  # argparse keeps subcommands only in this private list
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                if not only or name in only:
                    found.extend(_leaf_parsers(child) or [child])
    return found


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``chronicle`` command.

    ``--address`` and ``--namespace`` are accepted before the command and after it
    (``chronicle worker app.py --task-queue q --address host:7070``).
    """
    parser = argparse.ArgumentParser(
        prog="chronicle", description="Chronicle: durable-execution workflows for Python."
    )
    _add_connection_options(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _server.add_parser(commands)
    _worker.add_parser(commands)
    _workflow.add_parser(commands)
    _replay.add_parser(commands)
    _debug.add_parser(commands)
    for leaf in _leaf_parsers(parser, only=CLIENT_COMMANDS):
        if not any("--address" in action.option_strings for action in leaf._actions):
            _add_connection_options(leaf, top_level=False)
    return parser


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:3]) + (" …" if len(lines) > 3 else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.address is None:
        args.address = default_address()
    try:
        status: int = args.run(args)
        return status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CommandError as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except (ChronicleError, HistoryError, ValueError, TypeError, OSError, ImportError) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR
    except grpc.RpcError as error:  # should have been mapped by the SDK; be safe anyway
        print(f"error: server call failed: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR
    except asyncio.CancelledError:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's flush at exit does not fail on the
    closed pipe again (and print "Exception ignored")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


LONG_RUNNING_COMMANDS = ("server", "worker")
"""Commands that run until stopped: they switch gRPC to poll-based I/O (``entry``)."""


def entry() -> None:
    """The ``chronicle`` program (console script and ``python -m chronicle``): ``main`` on
    ``sys.argv``, after a long-running command chose gRPC's I/O (``grpc_io.use_polling_io``,
    which runs the command again when it changes the environment)."""
    parsed, _ = build_parser().parse_known_args()
    if parsed.command in LONG_RUNNING_COMMANDS:
        grpc_io.use_polling_io()
    raise SystemExit(main())
