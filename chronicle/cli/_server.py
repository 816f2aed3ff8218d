"""``chronicle server start-dev`` and ``chronicle server start``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from chronicle import eventloop
from chronicle.cli._common import CommandError

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Register ``server`` and its subcommands."""
    server = commands.add_parser("server", help="run a Chronicle server")
    sub = server.add_subparsers(dest="server_command", metavar="COMMAND", required=True)

    dev = sub.add_parser(
        "start-dev", help="run a server on an embedded Postgres (nothing to install)"
    )
    dev.add_argument("--port", type=int, default=7070, help="gRPC port (default 7070)")
    dev.add_argument(
        "--db-dir",
        type=Path,
        default=None,
        help="where the embedded Postgres keeps its data (default: a per-user "
        "data directory; kept between runs)",
    )
    dev.set_defaults(run=_start_dev)

    start = sub.add_parser("start", help="run a server on an existing Postgres")
    start.add_argument(
        "--database-url",
        default=os.environ.get("CHRONICLE_DATABASE_URL"),
        help="postgresql://... (default: $CHRONICLE_DATABASE_URL)",
    )
    start.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)",
    )
    start.add_argument("--port", type=int, default=7070, help="gRPC port (default 7070)")
    start.set_defaults(run=_start)


def _start_dev(args: argparse.Namespace) -> int:
    from chronicle.server.dev import run_dev

    run_dev(port=args.port, db_dir=args.db_dir)
    return 0


def _start(args: argparse.Namespace) -> int:
    if not args.database_url:
        raise CommandError(
            "server start needs --database-url (or $CHRONICLE_DATABASE_URL)", exit_code=2
        )
    from chronicle.server.app import serve
    from chronicle.server.config import ServerConfig

    config = ServerConfig(database_url=args.database_url, host=args.host, port=args.port)
    eventloop.run(serve(config))
    return 0
