"""``Services``: the process-wide handles every engine function needs."""

from __future__ import annotations

from dataclasses import dataclass

from chronicle.server.config import ServerConfig
from chronicle.server.matching.queries import QueryRouter
from chronicle.server.store.notify import Notifier
from chronicle.server.store.pool import Pool


@dataclass(frozen=True, slots=True)
class Services:
    """The pools, the configuration and the notifier of one server process.

    ``unacked_pool`` commits without waiting for the WAL flush (unless
    ``ServerConfig.dispatch_synchronous_commit``). It serves only task dispatch, whose result
    only the polling worker acts on, and the worker's answer commits synchronously: that flushes
    all WAL before it, so if the answer survives a Postgres crash so does the dispatch; if the
    dispatch is lost, so is everything after it, and the task is simply handed out again
    (at-least-once dispatch, as always). This saves one fsync per dispatch.
    """

    pool: Pool
    config: ServerConfig
    notifier: Notifier
    unacked_pool: Pool
    queries: QueryRouter
