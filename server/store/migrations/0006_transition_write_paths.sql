-- Every transition rewrites its run's executions row (the state snapshot changes each step).
-- On full pages (fillfactor 100) one update in ten to one in four (W3, pg_walinspect) did not
-- fit on its page: the new version went to a fresh page and every index of executions (four) got a new entry, growing
-- the table and its indexes until vacuum. Leaving 30 % of each page free keeps these updates
-- HOT (no index entries; the old version is pruned on the next read of the page). Applies to
-- pages filled from now on; existing pages keep their fill until rewritten.
ALTER TABLE executions SET (fillfactor = 70);

-- A transition deletes the task rows it makes stale by (kind, scheduled_event_id). With the
-- run-wide index the statement read every task row of the run to find them, so each step of a
-- wide fan-out (many activity tasks queued) cost more than the last; with the event id in the
-- index it is a look-up per listed row.
DROP INDEX tasks_by_run;
CREATE INDEX tasks_by_run ON tasks (namespace, workflow_id, run_id, scheduled_event_id);
