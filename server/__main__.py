"""``python -m chronicle.server``: run a server (or ``--dev`` with embedded Postgres)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

import pydantic

from chronicle import eventloop, grpc_io


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"chronicle server: error: {message}\n")
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m chronicle.server", description="Run a Chronicle server.")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("CHRONICLE_DATABASE_URL"),
        help="Postgres URL (default: $CHRONICLE_DATABASE_URL)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7070, help="0 picks a free port")
    parser.add_argument(
        "--dev", action="store_true", help="run an embedded Postgres (no --database-url needed)"
    )
    parser.add_argument("--db-dir", type=Path, default=None, help="data directory for --dev")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.dev:
            from chronicle.server.dev import run_dev

            run_dev(port=args.port, db_dir=args.db_dir)
            return 0
        if not args.database_url:
            sys.stderr.write(
                "chronicle server: error: --database-url (or $CHRONICLE_DATABASE_URL) is required\n"
            )
            return 2
        from chronicle.server.app import serve
        from chronicle.server.config import ServerConfig

        try:
            config = ServerConfig(database_url=args.database_url, host=args.host, port=args.port)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            sys.stderr.write(f"chronicle server: error: {where}: {first['msg']}\n")
            return 2
        eventloop.run(serve(config))
        return 0
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # one clear line, no traceback
        sys.stderr.write(f"chronicle server: error: {type(exc).__name__}: {exc}\n")
        return 1


if __name__ == "__main__":
    grpc_io.use_polling_io()  # may run this command again (chronicle/grpc_io.py)
    raise SystemExit(main())
