-- Signal de-duplication (a SignalReceived with the same request_id) and update look-ups (the
-- UpdateAccepted/UpdateCompleted of an update_id) used to scan a run's whole history, so each
-- signal or update of a long-running workflow cost more than the last. Partial expression
-- indexes make both a B-tree look-up; other events pay nothing for them on insert.
CREATE INDEX history_signal_request_ids ON history_events
    (namespace, workflow_id, run_id, (attributes ->> 'request_id'))
    WHERE event_type = 'SignalReceived';
CREATE INDEX history_update_ids ON history_events
    (namespace, workflow_id, run_id, (attributes ->> 'update_id'))
    WHERE event_type IN ('UpdateAccepted', 'UpdateCompleted');
