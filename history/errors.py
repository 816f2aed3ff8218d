"""Errors of the pure history layer.

HistoryError
├── InvalidHistoryError   an event sequence that cannot happen (bad order, gap, unknown id)
└── InvalidCommandError   a command (or its encoded form) that is malformed or not allowed now
"""

from __future__ import annotations


class HistoryError(Exception):
    """Base of the history layer's errors."""


class InvalidHistoryError(HistoryError):
    """An event sequence that cannot happen: a gap in ids, an answer to an unknown command, …"""


class InvalidCommandError(HistoryError):
    """A malformed command, or one not allowed in the run's current state.

    ``field`` names the offending field (``commands[2].duration``) when there is one.
    """

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field
