"""Task tokens: opaque bytes to workers, small JSON documents to the server."""

from __future__ import annotations

import json
from dataclasses import dataclass

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
    """Names one attempt of one activity of one run."""

    key: RunKey
    scheduled_event_id: int
    attempt: int

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
    return ActivityTaskToken(_key(data), _int(data, "sched"), _int(data, "attempt"))
