-- Open WorkerSession streams, on every replica: a row is written when a session opens and
-- deleted when it ends on its server (or when its server stops, or when the same worker opens
-- a newer session). A replica whose session of a worker ends does not time out the worker's
-- tasks while a newer session of the same (namespace, identity) is open anywhere: the worker
-- moved (server/engine/workers.py, docs/decisions.md §8). Nothing here is history.
CREATE TABLE worker_sessions (
    session_id  text        PRIMARY KEY,
    namespace   text        NOT NULL,
    identity    text        NOT NULL,
    server_id   text        NOT NULL,   -- the server process holding the stream
    opened_at   timestamptz NOT NULL DEFAULT now()   -- the database's clock, never a replica's
);
-- "A newer session of this worker is open": the lost-worker check and the sweep on open.
CREATE INDEX worker_sessions_worker ON worker_sessions (namespace, identity, opened_at);
-- A stopping server deletes its rows.
CREATE INDEX worker_sessions_server ON worker_sessions (server_id);
