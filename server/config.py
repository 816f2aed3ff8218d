"""``ServerConfig``: everything a server process needs to know, validated once at start."""

from __future__ import annotations

from datetime import timedelta

import pydantic


class ServerConfig(pydantic.BaseModel):
    """Settings of one server process.

    ``port=0`` binds a free port (read it back from ``Server.port``). ``poll_timeout`` caps every
    long poll (it is also capped by the caller's gRPC deadline). A query or update that no worker
    takes within ``query_pickup_timeout`` fails ("no worker is polling task queue …").
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    database_url: str
    host: str = "127.0.0.1"
    port: int = pydantic.Field(default=7070, ge=0, le=65535)
    poll_timeout: float = pydantic.Field(default=20.0, gt=0)
    max_payload_bytes: int = pydantic.Field(default=2 * 1024 * 1024, gt=0)
    default_workflow_task_timeout: timedelta = timedelta(seconds=10)
    sticky_timeout: timedelta = timedelta(seconds=3)
    query_pickup_timeout: float = pydantic.Field(default=5.0, gt=0)
    default_activity_start_to_close: timedelta = timedelta(minutes=5)
    lost_worker_settle: float = pydantic.Field(default=2.0, ge=0)
    """Seconds after a worker's session broke before its tasks are expired a second time (to
    catch what its in-flight RPCs committed); see ``engine/workers.py``."""
    keepalive_interval: float = pydantic.Field(default=15.0, gt=0)
    """Seconds between the server's HTTP/2 pings on every connection, idle or not. A peer that
    does not answer one within ``keepalive_timeout`` is cut off: a worker whose host froze or
    vanished without closing its connection is then lost like a killed one
    (``engine/workers.py``), and a proxy sees no stream idle for long."""
    keepalive_timeout: float = pydantic.Field(default=10.0, gt=0)
    """Seconds the server waits for a ping's answer before it closes the connection."""
    fast_path: bool = True
    """Workflow-task completions that qualify are written in one guarded autocommit statement
    after an unlocked read (``engine/fastpath.py``); False: always the locked transaction."""
    pool_min_size: int = pydantic.Field(default=2, ge=1)
    pool_max_size: int = pydantic.Field(default=20, ge=1)
