"""Structured logging: one structlog configuration and a helper binding a run's identity."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_configured = False


def configure(level: int = logging.INFO) -> None:
    """Configure structlog once per process (key=value lines on stderr), unless the embedding
    program (CLI, tests) configured it already. Server logs never go to stdout."""
    global _configured
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
