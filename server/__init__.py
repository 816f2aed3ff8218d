"""Chronicle's server: gRPC frontend, history engine, matching and timers over Postgres."""

from chronicle.server.app import Server, serve
from chronicle.server.config import ServerConfig
from chronicle.server.store.migrate import run_migrations

__all__ = ["Server", "ServerConfig", "run_migrations", "serve"]
