"""``WorkflowEventLoop``: the deterministic asyncio event loop that workflow code runs on.

It implements only what deterministic code needs:

- ``call_soon``: a FIFO deque of handles, so tasks step in creation order;
- ``call_later``/``call_at``: *durable* timers (``StartTimer``; cancelling the handle sends
  ``CancelTimer``), which is what makes ``asyncio.sleep``, ``asyncio.timeout`` and
  ``asyncio.wait_for`` replay-safe. ``call_at`` is turned back into a delay from ``time()``,
  rounded to milliseconds;
- ``time()``: the time of the current workflow task, never the wall clock;
- ``create_future``/``create_task`` (tasks are strongly referenced until done).

Everything that would do I/O, use threads or block raises ``NotImplementedError``: workflow code
must do I/O in activities. ``run_until_quiescent()`` runs ready handles until none is left; the
private ``asyncio.events._set_running_loop`` is used in exactly one place (``_running``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from contextvars import Context
from datetime import timedelta
from typing import Any, Protocol, TypeVar, TypeVarTuple, Unpack

__all__ = ["TimerService", "WorkflowEventLoop", "new_loop"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")
_log = logging.getLogger("chronicle.workflow.loop")


class TimerService(Protocol):
    """Where the loop's durable timers go (the instance: it numbers and records them)."""

    def start_timer(self, duration: timedelta, fire: Callable[[], None]) -> int:
        """Record a ``StartTimer`` for ``duration``; call ``fire()`` when it fires; its seq."""
        ...

    def cancel_timer(self, seq: int) -> None:
        """Cancel the timer ``seq`` (``CancelTimer``, or drop a not yet sent ``StartTimer``)."""
        ...


class _DurableTimerHandle(asyncio.TimerHandle):
    """A ``TimerHandle`` backed by a durable timer with ``seq`` (0: due at once, no timer)."""

    seq: int = 0


@contextlib.contextmanager
def _running(loop: asyncio.AbstractEventLoop) -> Generator[None, None, None]:
    """Make ``loop`` this thread's running loop for the duration (restoring the previous one).

    Private asyncio API, isolated here: ``asyncio.events._set_running_loop``.
    """
    previous = asyncio.events._get_running_loop()
    asyncio.events._set_running_loop(loop)
    try:
        yield
    finally:
        asyncio.events._set_running_loop(previous)


class WorkflowEventLoop(asyncio.AbstractEventLoop):
    """The event loop of one workflow instance; driven only by ``run_until_quiescent``."""

    def __init__(
        self, timers: TimerService, *, name: str = "workflow", runtime: object = None
    ) -> None:
        self._timers = timers
        self._name = name
        self._ready: deque[asyncio.Handle] = deque()
        self._time = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._task_counter = 0
        self._exception_handler: Any = None
        self.errors: list[BaseException] = []
        """Exceptions raised by callbacks (not by tasks): bugs that must fail the task."""
        self.ignored_errors: tuple[type[BaseException], ...] = ()
        """Exception types reported to the handler that are expected control flow."""
        self.chronicle_runtime = runtime

    # ------------------------------------------------------------ driving

    def set_time(self, seconds: float) -> None:
        """Set workflow time (epoch seconds of the current workflow task)."""
        self._time = seconds

    def run_until_quiescent(self, on_idle: Callable[[], bool] | None = None) -> None:
        """Run ready handles until none is left and ``on_idle()`` (re-checking conditions)
        makes no more progress."""
        with _running(self):
            while True:
                while self._ready:
                    handle = self._ready.popleft()
                    if not handle._cancelled:
                        handle._run()
                if on_idle is None or not on_idle() or not self._ready:
                    break

    def running(self) -> contextlib.AbstractContextManager[None]:
        """Context in which this loop is the running loop (for synchronous query handlers)."""
        return _running(self)

    @property
    def name(self) -> str:
        """The descriptive name given to this loop's tasks (workflow id and run id)."""
        return self._name

    def snapshot(self) -> Callable[[], None]:
        """Save the ready handles and tasks; the function returned drops what was scheduled
        since (a read-only call, a query or an update validator, leaves nothing to run: the
        tasks it created never start, and their coroutines are closed)."""
        ready = len(self._ready)
        tasks = set(self._tasks)

        def restore() -> None:
            while len(self._ready) > ready:
                self._ready.pop().cancel()
            for task in self._tasks - tasks:
                self._tasks.discard(task)
                task.get_coro().close()  # never started

        return restore

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        """Tasks not yet done."""
        return frozenset(self._tasks)

    def has_ready(self) -> bool:
        """True if handles are waiting to run."""
        return bool(self._ready)

    # ------------------------------------------------------------ scheduling

    def time(self) -> float:
        """Workflow time in epoch seconds: the current workflow task's time."""
        return self._time

    def call_soon(
        self,
        callback: Callable[[Unpack[_Ts]], object],
        *args: *_Ts,
        context: Context | None = None,
    ) -> asyncio.Handle:
        """Run ``callback(*args)`` after the handles already ready (FIFO)."""
        self._check_closed()
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_later(
        self,
        delay: float,
        callback: Callable[[Unpack[_Ts]], object],
        *args: *_Ts,
        context: Context | None = None,
    ) -> asyncio.TimerHandle:
        """Run ``callback`` after ``delay`` seconds of workflow time: a durable timer."""
        return self.call_at(self._time + delay, callback, *args, context=context)

    def call_at(
        self,
        when: float,
        callback: Callable[[Unpack[_Ts]], object],
        *args: *_Ts,
        context: Context | None = None,
    ) -> asyncio.TimerHandle:
        """Run ``callback`` at workflow time ``when``: a durable timer (rounded to ms)."""
        self._check_closed()
        handle = _DurableTimerHandle(when, callback, args, self, context)
        delay_ms = round((when - self._time) * 1000)
        if delay_ms <= 0:
            self._ready.append(handle)
            return handle

        def fire() -> None:
            if not handle._cancelled:
                self._ready.append(handle)

        handle.seq = self._timers.start_timer(timedelta(milliseconds=delay_ms), fire)
        return handle

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        seq = getattr(handle, "seq", 0)
        if seq:
            self._timers.cancel_timer(seq)

    def create_future(self) -> asyncio.Future[Any]:
        """A future bound to this loop."""
        return asyncio.Future(loop=self)

    def create_task(
        self,
        coro: Coroutine[Any, Any, _T] | Generator[Any, None, _T],
        *,
        name: str | None = None,
        context: Context | None = None,
    ) -> asyncio.Task[_T]:
        """A task on this loop, kept alive until done, named after the workflow run."""
        self._check_closed()
        self._task_counter += 1
        task_name = name or f"{self._name} task {self._task_counter}"
        task: asyncio.Task[_T] = asyncio.Task(coro, loop=self, name=task_name, context=context)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------ state and errors

    def is_running(self) -> bool:
        """Always True: workflow code only ever runs inside ``run_until_quiescent``."""
        return True

    def is_closed(self) -> bool:
        """True after ``close()``."""
        return self._closed

    def close(self) -> None:
        """Refuse further scheduling and drop ready handles."""
        self._closed = True
        self._ready.clear()

    def _check_closed(self) -> None:
        if self._closed:
            raise RuntimeError("the workflow event loop is closed (the instance was evicted)")

    def get_debug(self) -> bool:
        """Always False (debug mode would read the wall clock)."""
        return False

    def set_debug(self, enabled: bool) -> None:
        """Ignored: debug mode is not supported in workflow code."""

    def get_task_factory(self) -> None:
        """No task factory: tasks are plain ``asyncio.Task``."""
        return

    def set_exception_handler(self, handler: Any) -> None:
        """Install an exception handler (called with ``(loop, context)``)."""
        self._exception_handler = handler

    def get_exception_handler(self) -> Any:
        """The installed exception handler, or None."""
        return self._exception_handler

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        """Record callback errors (they fail the workflow task); log the rest."""
        exc = context.get("exception")
        if isinstance(exc, self.ignored_errors):
            return
        message = context.get("message", "")
        if exc is not None and "handle" in context and "never retrieved" not in message:
            self.errors.append(exc)
            return
        if "was destroyed but it is pending" in message:
            return
        _log.warning("%s: %s", self._name, message, exc_info=exc)

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        """Route to the installed handler, else ``default_exception_handler``."""
        if self._exception_handler is not None:
            self._exception_handler(self, context)
        else:
            self.default_exception_handler(context)

    async def shutdown_asyncgens(self) -> None:
        """Nothing to do: async generators are closed with their tasks."""

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        """Nothing to do: there is no executor."""


def _forbidden(name: str) -> Callable[..., Any]:
    def method(self: WorkflowEventLoop, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"loop.{name}() is not available in workflow code: workflows must be deterministic "
            "and do their I/O, threads and subprocesses in activities"
        )

    method.__name__ = name
    return method


for _name in (
    "run_forever",
    "run_until_complete",
    "stop",
    "run_in_executor",
    "set_default_executor",
    "getaddrinfo",
    "getnameinfo",
    "create_connection",
    "create_server",
    "sendfile",
    "start_tls",
    "create_unix_connection",
    "create_unix_server",
    "connect_accepted_socket",
    "create_datagram_endpoint",
    "connect_read_pipe",
    "connect_write_pipe",
    "subprocess_shell",
    "subprocess_exec",
    "add_reader",
    "remove_reader",
    "add_writer",
    "remove_writer",
    "sock_recv",
    "sock_recv_into",
    "sock_recvfrom",
    "sock_recvfrom_into",
    "sock_sendall",
    "sock_sendto",
    "sock_connect",
    "sock_accept",
    "sock_sendfile",
    "add_signal_handler",
    "remove_signal_handler",
    "set_task_factory",
):
    setattr(WorkflowEventLoop, _name, _forbidden(_name))


def new_loop(timers: TimerService, *, name: str, runtime: object) -> WorkflowEventLoop:
    """A ``WorkflowEventLoop`` (its I/O methods are the ``NotImplementedError`` stubs above)."""
    return WorkflowEventLoop(timers, name=name, runtime=runtime)  # type: ignore[abstract]  # stubs set by setattr
