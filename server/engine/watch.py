"""Long polls on a run's history: the run is marked watched while they wait.

A transition sends its run's ``chronicle_run`` notification only while the run is watched
(``sql.WATCH_RUN``, ``sql.transition_statement(announce=True)``), so the steps nobody waits
on cost no NOTIFY: no notification queue entry in Postgres and no wake-up of every server's
listening connection (docs/decisions.md §11).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from chronicle.server.engine.services import Services
from chronicle.server.store import notify, sql
from chronicle.server.store.rows import RunKey

T = TypeVar("T")

MARGIN = 1.0
"""Seconds the mark outlasts the poll at least: covers clock steps between the processes."""

SLACK = 30.0
"""Seconds a new mark lasts beyond that, so that a client following a run (one long poll per
step) renews it about twice a minute rather than at every step; meanwhile the run's steps are
announced whether or not anybody still waits."""


async def long_poll_run(
    services: Services,
    key: RunKey,
    attempt: Callable[[], Awaitable[T | None]],
    timeout: float,
    *,
    recheck: float | None = None,
) -> T | None:
    """Call ``attempt`` until it returns a value, waking when the run records new events.

    The first attempt runs at once; only when it finds nothing is the run marked watched
    (``sql.WATCH_RUN``: an autocommit update when the current mark ends too soon, committed
    before the next attempt reads) and the poll continued on the run's notifications, for up
    to ``timeout`` seconds in all. Returns None when the
    time runs out (or the server stops). ``recheck``: as ``Notifier.long_poll``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    found = await attempt()
    remaining = deadline - loop.time()
    if found is not None or remaining <= 0:
        return found
    await services.pool.execute(sql.WATCH_RUN, *key.params(), remaining + MARGIN, SLACK)
    return await services.notifier.long_poll(
        notify.RUN_CHANNEL,
        notify.run_key(*key.params()),
        attempt,
        deadline - loop.time(),
        recheck=recheck,
    )
