"""The server's logs are structured, a library's records included."""

from __future__ import annotations

import logging

import structlog

from chronicle.server import telemetry


def test_asyncpg_records_are_one_structured_line_without_a_traceback() -> None:
    """asyncpg logs a traceback each time it fails to reconnect while Postgres is down; the
    server logs it as one event with the error instead."""
    telemetry.configure()
    with structlog.testing.capture_logs() as logs:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError:
            logging.getLogger("asyncpg.pool").warning(
                "Failed to restore the pool connection floor; retrying", exc_info=True
            )
    assert logs == [
        {
            "event": "Failed to restore the pool connection floor; retrying",
            "log_level": "warning",
            "logger": "asyncpg.pool",
            "error": "[Errno 111] Connection refused",
            "error_type": "ConnectionRefusedError",
        }
    ]
