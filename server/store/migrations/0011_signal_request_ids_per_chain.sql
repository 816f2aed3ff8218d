-- A signal's request id is unique per chain of runs, not per run: the retry of a signal that
-- was recorded just before its run continued as new (or was retried, or reset) reaches the
-- chain's next run and must find it recorded (docs/decisions.md §22). The look-up is by
-- workflow id and request id across the id's runs, then the run's chain; the request id
-- now comes before the run id so that it is one B-tree probe, and the per-run look-up it
-- replaces uses the same index. Same entries, same cost on insert.
DROP INDEX history_signal_request_ids;
CREATE INDEX history_signal_request_ids ON history_events
    (namespace, workflow_id, (attributes ->> 'request_id'), run_id)
    WHERE event_type = 'SignalReceived';
