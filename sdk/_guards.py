"""Guard rails: calls that break replay, caught when workflow code makes them.

Workflow code must be deterministic: the clock, randomness, sleeping, files, sockets and threads
belong in activities. ``install()`` (done once per process, when the first workflow instance is
made) wraps ``time.time``/``time_ns``/``sleep``, ``uuid.uuid4``, ``uuid.uuid1``, the
module-level ``random`` functions and ``threading.Thread.start``, adds a Python audit hook for
``open`` and sockets,
and has ``guard_source`` check a workflow function's own source for ``datetime.now()`` and
friends (a C type whose methods cannot be wrapped). A call is reported when it happens on a
workflow event loop *and* comes straight from workflow code (not from a library such as
``logging`` that workflow code called): a ``WorkflowDeterminismWarning`` naming the call, where
it was made and the replay-safe alternative, or, in strict mode, a ``NondeterministicCallError``
raised at the call, which fails the workflow task (never the workflow).

Cost outside workflow code: one C call (``_get_running_loop``) and an attribute lookup per
guarded call; see ``bench`` (workload ``guarded-replay``) for the cost inside workflow code.
Limits: a name bound before ``install()`` (``from time import time`` at import time) keeps the
unwrapped function; ``datetime.now()`` is only found in the workflow function's own source.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import inspect
import random
import sys
import sysconfig
import textwrap
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from types import FrameType
from typing import Any, Literal

from chronicle.sdk._runtime import RUNTIME_ATTR
from chronicle.sdk.errors import ChronicleError

__all__ = [
    "GuardMode",
    "NondeterministicCallError",
    "WorkflowDeterminismWarning",
    "guard_source",
    "install",
    "uninstall",
]

GuardMode = Literal["warn", "strict", "off"]
"""``warn`` (default): a warning per call site; ``strict``: raise; ``off``: nothing."""


class WorkflowDeterminismWarning(UserWarning):
    """Workflow code called something that is not replay-safe (the message names the fix)."""


class NondeterministicCallError(ChronicleError):
    """Strict mode: workflow code called something that is not replay-safe. It fails the
    workflow task (retried), never the workflow."""


_TIME = "workflow.now() (or workflow.info() for ids), or an activity"
_RANDOM = "workflow.random() (a seeded random.Random recorded in the history)"
_ALTERNATIVES: dict[str, str] = {
    "time.time": _TIME,
    "time.time_ns": _TIME,
    "time.sleep": "await workflow.sleep(...) (a durable timer); never block the loop",
    "uuid.uuid4": "workflow.uuid4()",
    "uuid.uuid1": "workflow.uuid4()",
    "random": _RANDOM,
    "open": "an activity (files are I/O; their content is not in the history)",
    "socket": "an activity (network I/O is not replayed)",
    "thread": "asyncio tasks inside the workflow, or an activity",
    "datetime.now": "workflow.now()",
}
_AUDIT: dict[str, str] = {
    "open": "open",
    "socket.__new__": "socket",
    "socket.connect": "socket",
}
_PASS_THROUGH = frozenset({"socket", "threading", "io", "_pyio", "pathlib", "codecs"})
"""Modules that only forward a call: the code that called them is the one to blame."""

_LIBRARY_DIRS = tuple(
    {sysconfig.get_paths()[name] for name in ("stdlib", "platstdlib", "purelib", "platlib")}
)
_installed = False
_hooked = False
_install_lock = threading.Lock()
_originals: list[tuple[Any, str, Any]] = []


def _runtime() -> Any:
    loop = asyncio.events._get_running_loop()
    return None if loop is None else getattr(loop, RUNTIME_ATTR, None)


def _is_workflow_code(frame: FrameType) -> bool:
    module = str(frame.f_globals.get("__name__", ""))
    if module.startswith("chronicle.") or module == "chronicle":
        return False
    return not frame.f_code.co_filename.startswith(_LIBRARY_DIRS)


def _culprit(frame: FrameType | None) -> FrameType | None:
    """The frame that made the call: pass-through modules skipped; None for library code."""
    while frame is not None and frame.f_globals.get("__name__") in _PASS_THROUGH:
        frame = frame.f_back
    if frame is None or not _is_workflow_code(frame):
        return None
    return frame


def _report(runtime: Any, what: str, kind: str, frame: FrameType | None) -> None:
    mode = getattr(runtime, "guard_mode", "warn")
    culprit = _culprit(frame) if mode != "off" else None
    if culprit is None:
        return
    code = culprit.f_code
    info = runtime.info()
    message = (
        f"{what} called from workflow code at {code.co_filename}:{culprit.f_lineno} in "
        f"{code.co_name} (workflow {info.workflow_type!r}) is not replay-safe: use "
        f"{_ALTERNATIVES[kind]}"
    )
    if mode == "strict":
        raise NondeterministicCallError(message)
    warnings.warn_explicit(
        message,
        WorkflowDeterminismWarning,
        code.co_filename,
        culprit.f_lineno,
        module=str(culprit.f_globals.get("__name__", "")),
        registry=culprit.f_globals.setdefault("__warningregistry__", {}),
    )


def _wrap(function: Callable[..., Any], what: str, kind: str) -> Callable[..., Any]:
    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        runtime = _runtime()
        if runtime is not None:
            _report(runtime, what, kind, sys._getframe(1))
        return function(*args, **kwargs)

    guarded.__chronicle_guarded__ = function  # type: ignore[attr-defined]
    return guarded


def _audit(event: str, args: tuple[Any, ...]) -> None:
    kind = _AUDIT.get(event)
    if kind is None or not _installed:
        return
    runtime = _runtime()
    if runtime is None:
        return
    if kind == "open" and args and isinstance(args[0], int):
        return  # os.fdopen & co. on an already open descriptor
    _report(runtime, f"{event.split('.')[0]}()", kind, sys._getframe(1))


_RANDOM_FUNCTIONS = (
    "random",
    "randint",
    "randrange",
    "choice",
    "choices",
    "shuffle",
    "sample",
    "uniform",
    "gauss",
    "getrandbits",
    "randbytes",
    "betavariate",
    "expovariate",
    "normalvariate",
    "triangular",
)


def _patch(owner: Any, name: str, what: str, kind: str) -> None:
    original = getattr(owner, name)
    _originals.append((owner, name, original))
    setattr(owner, name, _wrap(original, what, kind))


def install() -> None:
    """Wrap the guarded functions and add the audit hook; idempotent and thread-safe."""
    global _installed, _hooked
    with _install_lock:
        if _installed:
            return
        for name in ("time", "time_ns", "sleep"):
            _patch(time, name, f"time.{name}()", f"time.{name}")
        for name in ("uuid4", "uuid1"):
            _patch(uuid, name, f"uuid.{name}()", f"uuid.{name}")
        for name in _RANDOM_FUNCTIONS:
            if hasattr(random, name):
                _patch(random, name, f"random.{name}()", "random")
        _patch(threading.Thread, "start", "Thread.start()", "thread")
        if not _hooked:
            sys.addaudithook(_audit)  # cannot be removed: uninstall() only silences it
            _hooked = True
        _installed = True


def uninstall() -> None:
    """Restore the wrapped functions (for benchmarks and tests; workers never call it)."""
    global _installed
    with _install_lock:
        while _originals:
            owner, name, original = _originals.pop()
            setattr(owner, name, original)
        _installed = False


_CLOCK_CALLS = frozenset({"now", "utcnow", "today", "fromtimestamp"})


def guard_source(fn: Callable[..., Any], mode: GuardMode) -> list[str]:
    """Problems found in ``fn``'s own source: ``datetime.now()``, ``date.today()`` …

    Returns the messages (warned, or raised as ``NondeterministicCallError`` in strict mode).
    Source that cannot be read is skipped.
    """
    if mode == "off":
        return []
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        first = inspect.getsourcelines(fn)[1]
        filename = inspect.getsourcefile(fn) or "<unknown>"
    except (OSError, TypeError):
        return []
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found: list[str] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _CLOCK_CALLS
            and _names_datetime(node.func.value)
        ):
            line = first + node.lineno - 1
            found.append(
                f"{ast.unparse(node.func)}() in workflow {fn.__name__!r} at {filename}:{line} "
                f"is not replay-safe: use {_ALTERNATIVES['datetime.now']}"
            )
    for message in found:
        if mode == "strict":
            raise NondeterministicCallError(message)
        warnings.warn(message, WorkflowDeterminismWarning, stacklevel=3)
    return found


def _names_datetime(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in ("datetime", "date", "dt")
    return isinstance(node, ast.Attribute) and node.attr in ("datetime", "date")
