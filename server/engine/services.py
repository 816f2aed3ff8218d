"""``Services``: the process-wide handles every engine function needs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from chronicle.server.config import ServerConfig
from chronicle.server.engine.closes import Closes
from chronicle.server.engine.known_rows import KnownRows
from chronicle.server.engine.lost_answers import Answering, Polling
from chronicle.server.engine.reclaim import Reclaims
from chronicle.server.matching.handoff import Handoff
from chronicle.server.matching.queries import QueryRouter
from chronicle.server.store.notify import Notifier
from chronicle.server.store.pool import Pool
from chronicle.server.store.rate_limits import RateLimits


@dataclass(frozen=True, slots=True)
class Services:
    """The pool, the configuration and the notifier of one server process.

    Every commit waits for the WAL flush, dispatch included: a dispatch appends events (a
    ``WorkflowTaskStarted``) that clients can read at once, and an acknowledged event must
    never disappear in a Postgres crash (docs/decisions.md 18, ``store/durability.py``).
    """

    pool: Pool
    config: ServerConfig
    notifier: Notifier
    queries: QueryRouter
    rate_limits: RateLimits
    server_id: str
    """This process among the replicas: the one id its ``pending_queries`` claims and its
    ``worker_sessions`` rows name (``Server.server_id``)."""
    handoff: Handoff = field(default_factory=Handoff)
    """Workflow-task polls waiting on this server, for starts to hand their first task to."""
    known_rows: KnownRows = field(default_factory=KnownRows)
    """The execution rows this server's fast path wrote last (``known_rows.py``)."""
    dispatch_locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    """Per (namespace, task queue): this server's dispatches of the queue take turns
    (``dispatch.py``)."""
    answering: Answering = field(default_factory=Answering)
    """Completions running on this server, for releases of lost answers to wait for
    (``lost_answers.py``)."""
    polling: Polling = field(default_factory=Polling)
    """Polls running on this server, for releases of lost poll answers to end
    (``lost_answers.py``; ``app.py`` subscribes it to ``chronicle_poll_released``)."""
    reclaims: Reclaims = field(default_factory=Reclaims)
    """Tasks started for callers that never got them, to take back once the database answers
    (``reclaim.py``)."""
    closes: Closes = field(default_factory=Closes)
    """Completions closing their run on this server, for result waiters (``closes.py``)."""
