-- Queries (and update validations) that a server process could not hand to one of its own
-- pollers at once: the asking process (origin) writes the row, and a workflow-task poller on
-- any replica claims it (server/matching/remote_queries.py, docs/decisions.md §20). Nothing
-- here is history: the origin deletes its row when the query ends; rows of an origin that
-- died are swept once past their deadline.
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
    origin          text        NOT NULL,   -- the asking server process
    created_at      timestamptz NOT NULL DEFAULT now(),
    pickup_by       timestamptz NOT NULL,   -- never taken by then: the origin gives up
    deadline        timestamptz NOT NULL,   -- no claim and no answer after it
    taker           text,                   -- the poller's identity holding the hand-off
    taker_server    text,                   -- the server process whose poll claimed it
    claim_id        text,                   -- the claim that made the current hand-off
    hand_offs       integer     NOT NULL DEFAULT 0,
    lost            text[]      NOT NULL DEFAULT '{}',  -- why hand-offs were undone
    answered        boolean     NOT NULL DEFAULT false,
    result          jsonb,
    failure         jsonb
);
-- Claims: the oldest claimable query of a queue.
CREATE INDEX pending_queries_queue ON pending_queries (namespace, task_queue, created_at)
    WHERE taker IS NULL AND NOT answered;
-- Releases of a lost worker's hand-offs.
CREATE INDEX pending_queries_taker ON pending_queries (namespace, taker) WHERE taker IS NOT NULL;
-- Sweeps of rows past their deadline.
CREATE INDEX pending_queries_deadline ON pending_queries (deadline);
