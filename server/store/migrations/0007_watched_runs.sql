-- A run announces a change of its history (a chronicle_run NOTIFY with its run key) only
-- while somebody long-polls it: history waits, update outcomes, an inline activity's report
-- waiting for its recording completion. A poll that has to wait sets watched_until before the
-- read that precedes its wait; every transition reads it back in the statement that updates
-- the row, so a watcher either sees the transition's events or gets its notification
-- (docs/decisions.md §11).
-- A nullable column without a default: adding it rewrites nothing.
ALTER TABLE executions ADD COLUMN watched_until timestamptz;
