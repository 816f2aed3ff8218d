"""Limits on what a request may ask for: identifier lengths and durations.

**Identifiers** (workflow ids, task queues, types, names).

Identifiers are stored in Postgres B-tree indexes, several in one index entry (namespace,
workflow id, run id and a signal's request id, for one), and an entry is limited to about
2,700 bytes. So an identifier may be at most ``MAX_ID_BYTES`` bytes in UTF-8, a namespace
``MAX_NAMESPACE_BYTES``; a longer one is refused with ``InvalidArgument`` naming it, before
anything is written. (Temporal's default limit for ids and names is also 1,000.)

**Durations** (timers, timeouts, retry intervals, start delays) may be at most
``MAX_DURATION``, 100 years: the server adds them to the current time, and a date past the year
9999 cannot be represented (an ``OverflowError``, which failed the request as INTERNAL and,
for a command, the workflow task on every retry).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from chronicle.server import errors

MAX_ID_BYTES: Final = 1000
MAX_NAMESPACE_BYTES: Final = 255
MAX_DURATION: Final = timedelta(days=36_525)


def check_identifier(value: str, field: str, limit: int = MAX_ID_BYTES) -> None:
    """``InvalidArgument`` naming ``field`` when ``value`` is longer than ``limit`` bytes."""
    if len(value) * 4 <= limit:  # no UTF-8 character is longer than 4 bytes
        return
    size = len(value.encode())
    if size > limit:
        raise errors.InvalidArgument(
            f"{field} is {size} bytes long, over the {limit}-byte limit for identifiers",
            field=field,
        )


def check_duration(value: timedelta | None, field: str) -> None:
    """``InvalidArgument`` naming ``field`` when ``value`` is longer than ``MAX_DURATION``."""
    if value is not None and value > MAX_DURATION:
        raise errors.InvalidArgument(
            f"{field} is {value.days} days, over the limit of {MAX_DURATION.days} days (100 years)",
            field=field,
        )
