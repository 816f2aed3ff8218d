-- Every transition rewrites its run's executions row (the state snapshot changes each step).
-- On full pages (fillfactor 100) about one update in ten could not stay on its page: the new
-- version went to a fresh page and every index of executions (four) got a new entry, growing
-- the table and its indexes until vacuum. Leaving 30 % of each page free keeps these updates
-- HOT (no index entries; the old version is pruned on the next read of the page). Applies to
-- pages filled from now on; existing pages keep their fill until rewritten.
ALTER TABLE executions SET (fillfactor = 70);
