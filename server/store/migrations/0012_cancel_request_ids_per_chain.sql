-- A cancellation request's request id is unique per chain of runs, as a signal's (0011): the
-- retry of a cancel recorded just before its run continued as new reaches the chain's next run
-- and must find it recorded (docs/decisions.md §22, sql.CANCEL_SEEN). Cancellation requests are
-- few, so the index is small.
CREATE INDEX history_cancel_request_ids ON history_events
    (namespace, workflow_id, (attributes ->> 'request_id'), run_id)
    WHERE event_type = 'WorkflowCancelRequested';
