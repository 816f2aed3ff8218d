-- Reset: a run made by `ResetWorkflow` remembers the run it was reset from and the reset point
-- (a WorkflowTaskCompleted event id of that run), so both runs can name each other.
ALTER TABLE executions ADD COLUMN reset_from_run_id text;
ALTER TABLE executions ADD COLUMN reset_event_id bigint;
