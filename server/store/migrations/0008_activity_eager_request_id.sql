-- An activity attempt started eagerly for a worker (written as started by the workflow-task
-- completion that scheduled it, and returned only in that completion's answer) records the
-- completion's request id, so that a worker that lost the answer can release the attempts it
-- never received: ReleaseEagerWorkflowTask puts them back in their queue at once, uncounted
-- (docs/decisions.md §17).
-- Empty for every other start (a poll's dispatch clears it, an inline start never sets it).
-- A constant default: adding the column rewrites nothing.
ALTER TABLE activities ADD COLUMN eager_request_id text NOT NULL DEFAULT '';
