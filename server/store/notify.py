"""LISTEN/NOTIFY: one listening connection per process dispatching to in-process waiters.

Channels and payloads (payloads are opaque keys compared as strings):

- ``chronicle_task``  ``task_key(kind, namespace, task_queue)``: a task row was inserted;
- ``chronicle_timer`` ``timer_payload(fire_at)``: timer rows were inserted, the earliest due then
  (the timer loop wakes only when that is sooner than its current wake-up);
- ``chronicle_run``   ``run_key(namespace, workflow_id, run_id)``: events were appended to a
  run that somebody watches (``engine/watch.py``); ``closed_key(…)`` when they closed the run,
  watched or not (result waiters wake only then);
- ``chronicle_query_offer`` ``task_key(WORKFLOW, namespace, task_queue)``: a query row of that
  queue became claimable (``matching/remote_queries.py``); the listener also wakes the queue's
  pollers;
- ``chronicle_query`` a query id: that query's row was claimed, given back or answered (its
  asking process reads the row);
- ``chronicle_poll_released`` ``poll_key(namespace, identity, request_id)``: a worker
  released a poll whose answer it lost; a server still running that worker's poll ends it
  (``engine/lost_answers.py``).

A key longer than ``MAX_KEY_BYTES`` is sent as a digest of itself (``_key``): Postgres refuses
payloads of 8,000 bytes or more, which would fail the transaction that sends it, and JSON
spells some characters in up to 6 bytes.

Notifications are sent with ``pg_notify`` inside the writing transaction, so Postgres delivers
them at commit. Waiters register *before* they look at the database, so a notification that
arrives between the look and the wait is never lost. When the connection drops, the notifier
reconnects and wakes every waiter (they re-check the database).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

import asyncpg

from chronicle.server import telemetry

TASK_CHANNEL: Final = "chronicle_task"
TIMER_CHANNEL: Final = "chronicle_timer"
RUN_CHANNEL: Final = "chronicle_run"
QUERY_OFFER_CHANNEL: Final = "chronicle_query_offer"
QUERY_CHANNEL: Final = "chronicle_query"
POLL_RELEASED_CHANNEL: Final = "chronicle_poll_released"
CHANNELS: Final = (
    TASK_CHANNEL,
    TIMER_CHANNEL,
    RUN_CHANNEL,
    QUERY_OFFER_CHANNEL,
    QUERY_CHANNEL,
    POLL_RELEASED_CHANNEL,
)
MAX_KEY_BYTES: Final = 1000
"""Keys longer than this are sent as a digest (far below Postgres's 8,000-byte payload limit)."""

T = TypeVar("T")


def _key(*parts: str) -> str:
    """``parts`` as a compact JSON array (ASCII), or, when that is longer than
    ``MAX_KEY_BYTES``, ``"#"`` and its SHA-256 digest in hex."""
    text = json.dumps(parts, separators=(",", ":"))
    if len(text) <= MAX_KEY_BYTES:
        return text
    return "#" + hashlib.sha256(text.encode()).hexdigest()


def task_key(kind: str, namespace: str, task_queue: str) -> str:
    """The ``chronicle_task`` payload for a queue."""
    return _key(kind, namespace, task_queue)


def timer_payload(fire_at: datetime) -> str:
    """The ``chronicle_timer`` payload: the earliest new ``fire_at`` as POSIX seconds."""
    return f"{fire_at.timestamp():.6f}"


TIMER_LOOP_MAX_SLEEP: Final = 5.0
"""The longest a timer loop sleeps before it reads the earliest timer again, notified or not."""

_CLOCK_MARGIN: Final = timedelta(seconds=1)


def timer_needs_notify(fire_at: datetime, now: datetime) -> bool:
    """Whether a new timer due at ``fire_at`` must be announced on ``chronicle_timer``.

    A timer loop sleeps at most ``TIMER_LOOP_MAX_SLEEP`` and wakes for a notification only
    when the new timer is due before its planned wake-up. A loop that went to sleep before
    this timer committed planned to wake no later than commit time + ``TIMER_LOOP_MAX_SLEEP``.
    So a timer due after that is found by the loop's next read without a notification, and is
    not announced. ``_CLOCK_MARGIN`` covers the time from ``now`` to the commit and clock
    differences between server processes. This saves a NOTIFY on every workflow task, whose
    timeout timer is due in 10 s.
    """
    return fire_at < now + timedelta(seconds=TIMER_LOOP_MAX_SLEEP) + _CLOCK_MARGIN


def run_key(namespace: str, workflow_id: str, run_id: str) -> str:
    """The ``chronicle_run`` payload for a run."""
    return _key(namespace, workflow_id, run_id)


def poll_key(namespace: str, identity: str, request_id: str) -> str:
    """The ``chronicle_poll_released`` payload for worker ``identity``'s poll ``request_id``."""
    return _key(namespace, identity, request_id)


def closed_key(namespace: str, workflow_id: str, run_id: str) -> str:
    """The ``chronicle_run`` payload sent when a run closes."""
    return _key(namespace, workflow_id, run_id, "closed")


class Waiter:
    """A wake-up flag for one (channel, key): set by notifications, cleared by its owner."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        """Wake the waiter."""
        self._event.set()

    def clear(self) -> None:
        """Forget earlier wake-ups (call before looking at the database)."""
        self._event.clear()

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a wake-up; True if woken."""
        if timeout <= 0:
            return self._event.is_set()
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        return True


class Notifier:
    """The process's LISTEN connection and its registry of waiters."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._conn: asyncpg.Connection[Any] | None = None
        self._waiters: dict[tuple[str, str], set[Waiter]] = {}
        self._channel_listeners: dict[str, list[Callable[[str], None]]] = {}
        self._lost = asyncio.Event()
        self._log = telemetry.logger(component="notifier")
        self._stopping = False

    async def connect(self) -> None:
        """Open the LISTEN connection (raises if Postgres is unreachable)."""
        conn: asyncpg.Connection[Any] = await asyncpg.connect(self._url)
        for channel in CHANNELS:
            await conn.add_listener(channel, self._on_notification)
        conn.add_termination_listener(self._on_termination)
        self._conn = conn
        self._lost.clear()

    def _on_notification(self, _conn: object, _pid: int, channel: str, payload: object) -> None:
        for waiter in self._waiters.get((channel, str(payload)), ()):
            waiter.set()
        for listener in self._channel_listeners.get(channel, ()):
            listener(str(payload))

    def listen_channel(self, channel: str, listener: Callable[[str], None]) -> None:
        """Call ``listener(payload)`` for every notification on ``channel`` (and with ``""``
        after a reconnect, when notifications may have been missed)."""
        self._channel_listeners.setdefault(channel, []).append(listener)

    def _on_termination(self, _conn: object) -> None:
        self._lost.set()

    async def run(self) -> None:
        """Keep the connection alive: check it periodically, reconnect when lost."""
        while True:
            try:
                async with asyncio.timeout(30):
                    await self._lost.wait()
            except TimeoutError:
                if await self._alive():
                    continue
            self._log.warning("notify connection lost; reconnecting")
            await self._reconnect()
            self.wake_all()

    async def _alive(self) -> bool:
        conn = self._conn
        if conn is None or conn.is_closed():
            return False
        try:
            async with asyncio.timeout(10):
                await conn.fetchval("SELECT 1")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return False
        return True

    async def _reconnect(self) -> None:
        delay = 0.05
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
        while True:
            try:
                await self.connect()
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self._log.warning("notify reconnect failed", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def wake(self, channel: str, key: str) -> None:
        """Wake this process's waiters for ``(channel, key)`` (no database round trip)."""
        for waiter in self._waiters.get((channel, key), ()):
            waiter.set()

    def has_waiters(self, channel: str, key: str) -> bool:
        """Whether a long poll of this process waits on ``(channel, key)`` right now."""
        return bool(self._waiters.get((channel, key)))

    def wake_all(self) -> None:
        """Wake every waiter (after a reconnect or at shutdown)."""
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.set()
        for listeners in self._channel_listeners.values():
            for listener in listeners:
                listener("")

    def stop(self) -> None:
        """Make every current and future long poll return promptly."""
        self._stopping = True
        self.wake_all()

    def is_stopping(self) -> bool:
        """True once the server is stopping: long polls return at once."""
        return self._stopping

    async def close(self) -> None:
        """Close the LISTEN connection."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=2)

    @contextlib.contextmanager
    def subscribe(self, channel: str, key: str, waiter: Waiter | None = None) -> Iterator[Waiter]:
        """Register a waiter (``waiter``, or a new one) for ``(channel, key)`` for the duration
        of a ``with`` block."""
        waiter = waiter or Waiter()
        waiters = self._waiters.setdefault((channel, key), set())
        waiters.add(waiter)
        try:
            yield waiter
        finally:
            waiters.discard(waiter)
            if not waiters:
                self._waiters.pop((channel, key), None)

    async def long_poll(
        self,
        channel: str,
        key: str,
        attempt: Callable[[], Awaitable[T | None]],
        timeout: float,
        *,
        recheck: float | None = None,
        waiter: Waiter | None = None,
    ) -> T | None:
        """Call ``attempt`` until it returns a value, waking on notifications for ``key``.

        Returns None when ``timeout`` seconds pass (or the server stops) first. ``recheck``
        bounds each wait, for conditions that become true without a notification. ``waiter``:
        one the caller also sets, for wake-ups from inside the process.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with self.subscribe(channel, key, waiter) as waiter:
            while True:
                waiter.clear()
                result = await attempt()
                if result is not None:
                    return result
                remaining = deadline - loop.time()
                if remaining <= 0 or self.is_stopping():
                    return None
                await waiter.wait(min(remaining, recheck) if recheck else remaining)
                if self.is_stopping():
                    return None


@contextlib.asynccontextmanager
async def started_notifier(database_url: str) -> AsyncIterator[Notifier]:
    """A connected notifier, closed on exit (for tests and tools)."""
    notifier = Notifier(database_url)
    await notifier.connect()
    try:
        yield notifier
    finally:
        await notifier.close()
