"""``Services``: the process-wide handles every engine function needs."""

from __future__ import annotations

from dataclasses import dataclass

from chronicle.server.config import ServerConfig
from chronicle.server.store.notify import Notifier
from chronicle.server.store.pool import Pool


@dataclass(frozen=True, slots=True)
class Services:
    """The pool, the configuration and the notifier of one server process."""

    pool: Pool
    config: ServerConfig
    notifier: Notifier
