"""Task tokens: opaque bytes to workers, small JSON documents to the server."""

from __future__ import annotations

import json
from dataclasses import dataclass

from chronicle.history.state import WorkflowState
from chronicle.server import errors
from chronicle.server.store.rows import RunKey


@dataclass(frozen=True, slots=True)
class WorkflowTaskToken:
    """Names one started workflow task of one run."""

    key: RunKey
    scheduled_event_id: int
    started_event_id: int

    def encode(self) -> bytes:
        """The opaque token handed to the worker."""
        return json.dumps(
            {
                "t": "wft",
                "ns": self.key.namespace,
                "wid": self.key.workflow_id,
                "rid": self.key.run_id,
                "sched": self.scheduled_event_id,
                "started": self.started_event_id,
            },
            separators=(",", ":"),
        ).encode()


@dataclass(frozen=True, slots=True)
class ActivityTaskToken:
    """Names one attempt of one activity of one run.

    Tokens the server hands out name the activity by ``scheduled_event_id``. A worker that runs
    an activity *inline* (before its schedule is recorded, see docs/inline-activities.md) mints
    the token itself, naming the activity by ``activity_id`` (unique among the run's pending
    activities) with ``scheduled_event_id`` 0: ``{"t":"act","ns","wid","rid","aid","attempt"}``.
    """

    key: RunKey
    scheduled_event_id: int
    attempt: int
    activity_id: str = ""

    def encode(self) -> bytes:
        """The opaque token handed to the worker."""
        return json.dumps(
            {
                "t": "act",
                "ns": self.key.namespace,
                "wid": self.key.workflow_id,
                "rid": self.key.run_id,
                "sched": self.scheduled_event_id,
                "attempt": self.attempt,
            },
            separators=(",", ":"),
        ).encode()

    def scheduled_event_id_in(self, state: WorkflowState) -> int:
        """The activity's ``scheduled_event_id`` in ``state`` (0: no such pending activity)."""
        if self.scheduled_event_id:
            return self.scheduled_event_id
        for sid, pending in state.pending_activities.items():
            if pending.activity_id == self.activity_id:
                return sid
        return 0


def _parse(token: bytes, kind: str) -> dict[str, object]:
    if not token:
        raise errors.InvalidArgument("task_token is empty", field="task_token")
    try:
        data = json.loads(token)
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("t") != kind:
        raise errors.InvalidArgument("task_token is malformed", field="task_token")
    return data


def _key(data: dict[str, object]) -> RunKey:
    ns, wid, rid = data.get("ns"), data.get("wid"), data.get("rid")
    if not (isinstance(ns, str) and isinstance(wid, str) and isinstance(rid, str)):
        raise errors.InvalidArgument("task_token is malformed", field="task_token")
    return RunKey(ns, wid, rid)


def _int(data: dict[str, object], name: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise errors.InvalidArgument("task_token is malformed", field="task_token")
    return value


def decode_workflow_token(token: bytes) -> WorkflowTaskToken:
    """Read a workflow task token; ``InvalidArgument`` when malformed."""
    data = _parse(token, "wft")
    return WorkflowTaskToken(_key(data), _int(data, "sched"), _int(data, "started"))


def decode_activity_token(token: bytes) -> ActivityTaskToken:
    """Read an activity task token; ``InvalidArgument`` when malformed."""
    data = _parse(token, "act")
    activity_id = data.get("aid")
    if activity_id is not None:
        if not isinstance(activity_id, str) or not activity_id:
            raise errors.InvalidArgument("task_token is malformed", field="task_token")
        return ActivityTaskToken(_key(data), 0, _int(data, "attempt"), activity_id)
    return ActivityTaskToken(_key(data), _int(data, "sched"), _int(data, "attempt"))
