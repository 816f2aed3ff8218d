"""Named crash points: a test makes the server SIGKILL itself at one, to hit a narrow window
(between a commit and its reply, say) every time instead of by luck.

``CHRONICLE_CRASH_AT`` in the server's environment (comma-separated point names) arms them.
It is read once, at import; unset, ``reached`` is one set lookup. For end-to-end tests only
(tests/e2e): a server with an armed point kills itself the first time it gets there.
"""

from __future__ import annotations

import os
import signal
from typing import Final

from chronicle.server import telemetry

ENV: Final = "CHRONICLE_CRASH_AT"
"""The environment variable naming the armed crash points."""

EAGER_WORKFLOW_TASK_COMMITTED: Final = "eager_workflow_task_committed"
"""A completion's commit started the run's next workflow task for the completing worker; the
answer carrying that task is not sent yet."""

EAGER_ACTIVITIES_COMMITTED: Final = "eager_activities_committed"
"""A workflow-task completion's commit started activities for the completing worker (eager
activity dispatch); the answer carrying their tasks is not sent yet."""

_ARMED: Final = frozenset(name for name in os.environ.get(ENV, "").split(",") if name)


def reached(name: str) -> None:
    """SIGKILL this process here if crash point ``name`` is armed (``CHRONICLE_CRASH_AT``)."""
    if name in _ARMED:
        telemetry.logger(point=name).warning("crash point reached; killing the server")
        os.kill(os.getpid(), signal.SIGKILL)
