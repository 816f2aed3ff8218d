"""``workflow.patched`` and ``workflow.deprecate_patch``: the patch markers of one instance.

Asked on a live workflow task, ``patched(id)`` is True and records a ``RecordMarker`` named
``PATCH_MARKER`` with the id in its details; while replaying it is True only if the workflow task
being replayed recorded that marker. The first answer for an id holds for the rest of the run.
A recorded marker that the code no longer asks for is skipped by the replay check
(``_replay.py``), so removing a ``patched()`` call later is allowed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chronicle.history import commands as cmd
from chronicle.history import events as ev
from chronicle.history.payloads import PayloadEncodingError, from_payload, to_payload
from chronicle.sdk._calls import DurableCalls
from chronicle.sdk._commands import CommandBuffer, call_site
from chronicle.sdk._replay import PATCH_MARKER

__all__ = ["Patches"]


class Patches:
    """The patch decisions of one workflow instance, by patch id (see the module docstring)."""

    def __init__(self, buffer: CommandBuffer, calls: DurableCalls) -> None:
        self._buffer = buffer
        self._calls = calls
        self._decided: dict[str, bool] = {}

    def patched(self, patch_id: str, replaying: bool, recorded: Sequence[ev.Event]) -> bool:
        """True (and recorded) on new code paths; while ``replaying``, whether the events the
        replayed workflow task ``recorded`` have the marker of ``patch_id``."""
        known = self._decided.get(patch_id)
        if known is not None:
            return known
        present = not replaying or any(
            isinstance(e.attributes, ev.MarkerRecorded)
            and e.attributes.marker_name == PATCH_MARKER
            and _patch_id(e.attributes) == patch_id
            for e in recorded
        )
        if present:
            site = call_site()
            self._buffer.add(
                cmd.RecordMarker(
                    seq=self._calls.next_seq("marker"),
                    marker_name=PATCH_MARKER,
                    details={"id": to_payload(patch_id)},
                    call_site=site,
                ),
                site,
            )
        self._decided[patch_id] = present
        return present

    def save(self) -> dict[str, bool]:
        """The decisions so far, for ``restore`` after a read-only call (a query)."""
        return dict(self._decided)

    def restore(self, saved: dict[str, bool]) -> None:
        """Put back what ``save`` returned: the read-only call leaves no trace."""
        self._decided = saved


def _patch_id(marker: ev.MarkerRecorded) -> Any:
    payload = marker.details.get("id")
    try:
        return from_payload(payload) if payload is not None else None
    except PayloadEncodingError:
        return None
