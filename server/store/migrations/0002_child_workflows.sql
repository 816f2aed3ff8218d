-- Child workflows: a child run remembers which event of its parent initiated it, so that its
-- close can be reported to the parent (a child_closed timer row on the parent run).
ALTER TABLE executions ADD COLUMN parent_initiated_event_id bigint;
