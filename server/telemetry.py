"""Structured logging: one structlog configuration and a helper binding a run's identity."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_configured = False
_bridged = False

LIBRARY_LOGGERS = ("asyncpg",)
"""Standard-library loggers of the libraries the server uses, logged through structlog."""


class _LibraryRecords(logging.Handler):
    """A library's log record as one structured line: its message, the logger's name, and the
    error it carried as ``error``/``error_type`` instead of a traceback (asyncpg logs one each
    time it fails to reconnect while Postgres is down)."""

    def emit(self, record: logging.LogRecord) -> None:
        """Log ``record`` through structlog."""
        fields: dict[str, Any] = {"logger": record.name}
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            fields["error"] = str(error)
            fields["error_type"] = type(error).__name__
        structlog.get_logger("chronicle.server").log(record.levelno, record.getMessage(), **fields)


def _bridge_library_logs() -> None:
    global _bridged
    if _bridged:
        return
    _bridged = True
    for name in LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        library.addHandler(_LibraryRecords())
        library.propagate = False


def configure(level: int = logging.INFO) -> None:
    """Configure structlog once per process (key=value lines on stderr), unless the embedding
    program (CLI, tests) configured it already, and log the libraries' records
    (``LIBRARY_LOGGERS``) through it. Server logs never go to stdout."""
    global _configured
    _bridge_library_logs()
    if _configured or structlog.is_configured():
        return
    _configured = True
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"]),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def logger(**bound: Any) -> Any:
    """A server logger with ``bound`` context (e.g. namespace, workflow_id, run_id)."""
    configure()
    return structlog.get_logger("chronicle.server").bind(**bound)


def run_logger(namespace: str, workflow_id: str, run_id: str) -> Any:
    """A logger bound to one run."""
    return logger(namespace=namespace, workflow_id=workflow_id, run_id=run_id)
