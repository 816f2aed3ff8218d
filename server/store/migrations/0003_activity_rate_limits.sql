-- Per-task-queue activity rate limits (activities per second across all workers). One row per
-- limited queue: the earliest time the next activity task may be handed out.
CREATE TABLE task_queue_rate_limits (
    namespace text NOT NULL,
    task_queue text NOT NULL,
    rate double precision NOT NULL,
    next_at timestamptz NOT NULL,
    granted_at timestamptz,
    PRIMARY KEY (namespace, task_queue)
);
