-- Reference schema: the result of applying every migration in migrations/ in order.
-- Never applied directly by the server; tests check it matches the migrations.

CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE executions (
    namespace                  text        NOT NULL,
    workflow_id                text        NOT NULL,
    run_id                     text        NOT NULL,
    workflow_type              text        NOT NULL,
    task_queue                 text        NOT NULL,
    status                     text        NOT NULL,
    next_event_id              bigint      NOT NULL,
    state                      jsonb       NOT NULL,
    start_time                 timestamptz NOT NULL,
    close_time                 timestamptz,
    sticky_identity            text        NOT NULL DEFAULT '',
    last_workflow_task_failure jsonb,
    memo                       jsonb       NOT NULL DEFAULT '{}',
    parent_namespace           text,
    parent_workflow_id         text,
    parent_run_id              text,
    first_run_id               text        NOT NULL,
    start_request_id           text        NOT NULL DEFAULT '',
    parent_initiated_event_id  bigint,
    reset_from_run_id          text,
    reset_event_id             bigint,
    watched_until              timestamptz,
    PRIMARY KEY (namespace, workflow_id, run_id)
) WITH (fillfactor = 70);
CREATE INDEX executions_by_status ON executions (namespace, status, start_time DESC);
CREATE INDEX executions_by_type ON executions (namespace, workflow_type, start_time DESC);
CREATE INDEX executions_by_start ON executions (namespace, start_time DESC);

CREATE TABLE current_executions (
    namespace        text NOT NULL,
    workflow_id      text NOT NULL,
    run_id           text NOT NULL,
    status           text NOT NULL,
    start_request_id text NOT NULL DEFAULT '',
    PRIMARY KEY (namespace, workflow_id)
);

CREATE TABLE history_events (
    namespace   text        NOT NULL,
    workflow_id text        NOT NULL,
    run_id      text        NOT NULL,
    event_id    bigint      NOT NULL,
    event_type  text        NOT NULL,
    event_time  timestamptz NOT NULL,
    attributes  jsonb       NOT NULL,
    PRIMARY KEY (namespace, workflow_id, run_id, event_id)
);
CREATE INDEX history_signal_request_ids ON history_events
    (namespace, workflow_id, (attributes ->> 'request_id'), run_id)
    WHERE event_type = 'SignalReceived';
CREATE INDEX history_cancel_request_ids ON history_events
    (namespace, workflow_id, (attributes ->> 'request_id'), run_id)
    WHERE event_type = 'WorkflowCancelRequested';
CREATE INDEX history_update_ids ON history_events
    (namespace, workflow_id, run_id, (attributes ->> 'update_id'))
    WHERE event_type IN ('UpdateAccepted', 'UpdateCompleted');

CREATE TABLE tasks (
    id                 bigserial   PRIMARY KEY,
    kind               text        NOT NULL CHECK (kind IN ('workflow', 'activity')),
    namespace          text        NOT NULL,
    task_queue         text        NOT NULL,
    workflow_id        text        NOT NULL,
    run_id             text        NOT NULL,
    scheduled_event_id bigint      NOT NULL,
    sticky_identity    text        NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tasks_by_queue ON tasks (namespace, task_queue, kind, id);
CREATE INDEX tasks_by_run ON tasks (namespace, workflow_id, run_id, scheduled_event_id);

CREATE TABLE timers (
    id          bigserial   PRIMARY KEY,
    kind        text        NOT NULL,
    namespace   text        NOT NULL,
    workflow_id text        NOT NULL,
    run_id      text        NOT NULL,
    ref_id      bigint      NOT NULL,
    attempt     integer     NOT NULL DEFAULT 1,
    fire_at     timestamptz NOT NULL
);
CREATE INDEX timers_by_fire_at ON timers (fire_at);
CREATE INDEX timers_by_run ON timers (namespace, workflow_id, run_id, ref_id);

CREATE TABLE activities (
    namespace              text        NOT NULL,
    workflow_id            text        NOT NULL,
    run_id                 text        NOT NULL,
    scheduled_event_id     bigint      NOT NULL,
    state                  text        NOT NULL,
    attempt                integer     NOT NULL DEFAULT 1,
    scheduled_time         timestamptz NOT NULL,
    attempt_scheduled_time timestamptz NOT NULL,
    started_time           timestamptz,
    last_heartbeat_time    timestamptz,
    heartbeat_details      jsonb,
    last_failure           jsonb,
    last_worker_identity   text        NOT NULL DEFAULT '',
    attributes             jsonb       NOT NULL,
    eager_request_id       text        NOT NULL DEFAULT '',
    PRIMARY KEY (namespace, workflow_id, run_id, scheduled_event_id)
);

CREATE TABLE task_queue_rate_limits (
    namespace  text             NOT NULL,
    task_queue text             NOT NULL,
    rate       double precision NOT NULL,
    next_at    timestamptz      NOT NULL,
    granted_at timestamptz,
    PRIMARY KEY (namespace, task_queue)
);

CREATE TABLE pending_queries (
    query_id        text        PRIMARY KEY,
    namespace       text        NOT NULL,
    task_queue      text        NOT NULL,
    workflow_id     text        NOT NULL,
    run_id          text        NOT NULL,
    workflow_type   text        NOT NULL,
    name            text        NOT NULL,
    args            jsonb       NOT NULL,
    validate_update boolean     NOT NULL,
    origin          text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    pickup_by       timestamptz NOT NULL,
    deadline        timestamptz NOT NULL,
    taker           text,
    taker_server    text,
    claim_id        text,
    hand_offs       integer     NOT NULL DEFAULT 0,
    lost            text[]      NOT NULL DEFAULT '{}',
    answered        boolean     NOT NULL DEFAULT false,
    result          jsonb,
    failure         jsonb
);

CREATE INDEX pending_queries_queue ON pending_queries (namespace, task_queue, created_at)
    WHERE taker IS NULL AND NOT answered;

CREATE INDEX pending_queries_taker ON pending_queries (namespace, taker) WHERE taker IS NOT NULL;

CREATE INDEX pending_queries_deadline ON pending_queries (deadline);

CREATE TABLE worker_sessions (
    session_id  text        PRIMARY KEY,
    namespace   text        NOT NULL,
    identity    text        NOT NULL,
    server_id   text        NOT NULL,
    opened_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX worker_sessions_worker ON worker_sessions (namespace, identity, opened_at);

CREATE INDEX worker_sessions_server ON worker_sessions (server_id);
