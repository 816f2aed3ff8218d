"""The execution rows this server wrote last, so the fast path can skip reading them back.

After a fast-path write, the server knows the execution row exactly: the ``xmin`` that the
write returned is a version only that statement can have produced, and the values are the ones
it wrote. The next completion of the run takes the row from here instead of from Postgres, which
saves one round trip per step. The xmin guard keeps this safe. If anything else wrote the row
since (another server, a timer, a signal), the guarded write writes nothing, and the completion
reruns with a fresh read (docs/fastpath.md).

Entries expire after ``MAX_AGE`` seconds; this is far too short for a 32-bit xid to come round
again. At most ``MAX_ENTRIES`` are kept; the least recently written go first. A completion
takes its run's entry out, and only a successful write puts it back, so an entry that proved
stale is never used twice.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from chronicle.history.state import WorkflowState
    from chronicle.server.store.rows import RunKey

MAX_AGE: Final = 60.0
MAX_ENTRIES: Final = 10_000


@dataclass(frozen=True, slots=True)
class KnownRow:
    """An execution row as this server wrote it: ``row`` has ``READ_EXECUTION``'s columns but
    ``state``, which is ``state`` already decoded."""

    row: dict[str, Any]
    state: WorkflowState
    written_at: float


class KnownRows:
    """The last row version this server wrote, per run (one server process's memory)."""

    def __init__(self) -> None:
        self._rows: OrderedDict[RunKey, KnownRow] = OrderedDict()

    def take(self, key: RunKey) -> KnownRow | None:
        """Remove and return the row as last written here, or None (unknown or too old)."""
        known = self._rows.pop(key, None)
        if known is None or time.monotonic() - known.written_at > MAX_AGE:
            return None
        return known

    def remember(
        self,
        key: RunKey,
        *,
        version: int,
        state: WorkflowState,
        sticky_identity: str,
        last_workflow_task_failure: str | None,
        has_parent: bool,
    ) -> None:
        """Record the row a committed write left (its new ``xmin`` and values)."""
        row = {
            "version": version,
            "sticky_identity": sticky_identity,
            "last_workflow_task_failure": last_workflow_task_failure,
            "has_parent": has_parent,
        }
        self._rows[key] = KnownRow(row, state, time.monotonic())
        self._rows.move_to_end(key)
        while len(self._rows) > MAX_ENTRIES:
            self._rows.popitem(last=False)

    def __len__(self) -> int:
        return len(self._rows)
