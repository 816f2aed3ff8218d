"""How long the identifiers a request names may be (workflow ids, task queues, types, names).

Identifiers are stored in Postgres B-tree indexes, several in one index entry (namespace,
workflow id, run id and a signal's request id, for one), and an entry is limited to about
2,700 bytes. So an identifier may be at most ``MAX_ID_BYTES`` bytes in UTF-8, a namespace
``MAX_NAMESPACE_BYTES``; a longer one is refused with ``InvalidArgument`` naming it, before
anything is written. (Temporal's default limit for ids and names is also 1,000.)
"""

from __future__ import annotations

from typing import Final

from chronicle.server import errors

MAX_ID_BYTES: Final = 1000
MAX_NAMESPACE_BYTES: Final = 255


def check(value: str, field: str, limit: int = MAX_ID_BYTES) -> None:
    """``InvalidArgument`` naming ``field`` when ``value`` is longer than ``limit`` bytes."""
    if len(value) * 4 <= limit:  # no UTF-8 character is longer than 4 bytes
        return
    size = len(value.encode())
    if size > limit:
        raise errors.InvalidArgument(
            f"{field} is {size} bytes long, over the {limit}-byte limit for identifiers",
            field=field,
        )
