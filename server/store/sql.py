"""Every SQL statement of the server, as named module-level constants.

Only ``$n`` parameters vary; no statement text is ever built from request data. Statements that
change several tables at once use data-modifying CTEs so that a transition costs few round trips.
Run keys are always ``$1`` namespace, ``$2`` workflow_id, ``$3`` run_id.
"""

from __future__ import annotations

import functools
import re
from typing import Final

MIGRATION_LOCK_KEY: Final = 7_370_453_207_141_229_388
"""Advisory lock key held while migrations run (any constant unique to Chronicle)."""

ADVISORY_LOCK: Final = "SELECT pg_advisory_lock($1)"
ADVISORY_UNLOCK: Final = "SELECT pg_advisory_unlock($1)"
CREATE_SCHEMA_MIGRATIONS: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
APPLIED_MIGRATIONS: Final = "SELECT version FROM schema_migrations ORDER BY version"
RECORD_MIGRATION: Final = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"

# ---------------------------------------------------------------- executions

LOCK_EXECUTION: Final = """
SELECT state, sticky_identity, last_workflow_task_failure, parent_namespace,
       parent_workflow_id, parent_run_id, parent_initiated_event_id
FROM executions WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3
FOR UPDATE"""

READ_EXECUTION: Final = """
SELECT xmin AS version, state, sticky_identity, last_workflow_task_failure,
       parent_workflow_id IS NOT NULL AS has_parent
FROM executions WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3"""
"""The execution row without a lock, with its row version (``xmin``) for the fast path's guard
(``transition_statement``'s ``$35``)."""

GET_EXECUTION: Final = """
SELECT workflow_type, task_queue, status, next_event_id, state, start_time, close_time,
       sticky_identity, last_workflow_task_failure, memo, parent_workflow_id, parent_run_id,
       first_run_id
FROM executions WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3"""

GET_RESET_LINKS: Final = """
SELECT e.reset_from_run_id, e.reset_event_id,
       (SELECT n.run_id FROM executions n
        WHERE n.namespace = $1 AND n.workflow_id = $2 AND n.reset_from_run_id = $3
        LIMIT 1) AS reset_to_run_id
FROM executions e WHERE e.namespace = $1 AND e.workflow_id = $2 AND e.run_id = $3"""
"""The run that run $3 was reset from (and the reset point), and the run a reset of it made."""

SET_RESET_FROM: Final = """
UPDATE executions SET reset_from_run_id = $4, reset_event_id = $5
WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3"""
"""Record on a reset run (created in the same transaction) where it was reset from."""

RESET_SUCCESSOR: Final = """
SELECT run_id FROM executions
WHERE namespace = $1 AND workflow_id = $2 AND reset_from_run_id = $3"""
"""The run a run was reset into, if any (a run is reset at most once: only the current run
can be, and its reset run takes over as current)."""

GET_EXECUTION_STATUS: Final = """
SELECT status, next_event_id, state->>'new_run_id' AS new_run_id
FROM executions WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3"""

WATCH_RUN: Final = """
UPDATE executions SET watched_until = now() + make_interval(secs => $4 + $5)
WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3 AND status = 'running'
  AND (watched_until IS NULL OR watched_until < now() + make_interval(secs => $4))"""
"""Mark an open run watched for at least ``$4`` seconds: until then every transition of the run
sends its ``chronicle_run`` notification (``transition_statement(announce=True)``). A mark is
written ``$5`` seconds longer than needed, and only when the current one ends too soon, so a
client that follows a run (a long poll per step) writes about once per ``$5`` s, not per step.
Committed before the read that precedes the watcher's wait: a transition either wrote before
that read, or updates the row after the mark and reads it back from the newest version (both
update the row: its lock orders them). When an existing mark already lasts long enough
nothing is written, and that committed mark serves the same way."""

GET_EXECUTION_OUTCOME: Final = """
SELECT e.status, e.next_event_id, e.state->>'new_run_id' AS new_run_id,
       h.attributes::text AS close_attributes, h.event_type AS close_type
FROM executions e
LEFT JOIN history_events h
  ON e.status <> 'running' AND h.namespace = e.namespace AND h.workflow_id = e.workflow_id
 AND h.run_id = e.run_id AND h.event_id = e.next_event_id - 1
WHERE e.namespace = $1 AND e.workflow_id = $2 AND e.run_id = $3"""
"""``GET_EXECUTION_STATUS`` and, once the run is closed, its close event (its last event)."""

GET_CURRENT: Final = """
SELECT run_id, status, start_request_id FROM current_executions
WHERE namespace = $1 AND workflow_id = $2"""

GET_RUN_CHAIN: Final = """
SELECT e.run_id, e.first_run_id, e.status
FROM executions e
WHERE e.namespace = $1 AND e.workflow_id = $2
  AND e.run_id = COALESCE(
      NULLIF($3, ''),
      (SELECT c.run_id FROM current_executions c WHERE c.namespace = $1 AND c.workflow_id = $2))"""
"""The run ``$3`` (or, when it is empty, the workflow id's current run) with the first run of
its chain, in one round trip, without locks: ``first_run_id`` never changes (docs/decisions.md
§22). No row when there is no such run."""

LOCK_CURRENT_RUN: Final = """
WITH
seen AS MATERIALIZED (
    SELECT run_id FROM current_executions WHERE namespace = $1 AND workflow_id = $2
),
run AS MATERIALIZED (
    SELECT e.run_id, e.first_run_id FROM executions e
    WHERE e.namespace = $1 AND e.workflow_id = $2 AND e.run_id = (SELECT run_id FROM seen)
    FOR UPDATE OF e
)
SELECT c.run_id, c.status, c.start_request_id, (SELECT run_id FROM run) AS locked_run_id,
       (SELECT first_run_id FROM run) AS first_run_id
FROM current_executions c
WHERE c.namespace = $1 AND c.workflow_id = $2
  AND (EXISTS (SELECT FROM run) OR EXISTS (SELECT FROM seen))
FOR UPDATE OF c"""
"""Lock a workflow id's current run in the one lock order (docs/decisions.md §15): the
execution row of the run the current row names, then the current row itself. The condition
on ``run`` is a one-time filter, evaluated (and so the execution row locked) before the
current row is read, as in ``LOCK_EXECUTION_AND_ACTIVITIES``. No row when the id has none.
``locked_run_id`` is the run whose execution row was locked (``first_run_id``: the first run
of its chain); the current row is the newest
version (READ COMMITTED re-reads a row it waited for), so it may name another run when a
continue-as-new, reset or start replaced it meanwhile: then the caller must not wait for that
run's row while it holds the current row, and reruns its transaction instead
(``current_run.lock``)."""

INSERT_EXECUTION: Final = """
INSERT INTO executions (namespace, workflow_id, run_id, workflow_type, task_queue, status,
                        next_event_id, state, start_time, memo, parent_namespace,
                        parent_workflow_id, parent_run_id, parent_initiated_event_id,
                        first_run_id, start_request_id)
VALUES ($1, $2, $3, $4, $5, 'running', 1, '{}'::jsonb, $6, $7::jsonb, $8, $9, $10, $11, $12,
        $13)"""

INSERT_CURRENT: Final = """
INSERT INTO current_executions (namespace, workflow_id, run_id, status, start_request_id)
VALUES ($1, $2, $3, 'running', $4)"""
"""A plain insert: a concurrent start of the same id fails with a unique violation (and is
retried, then sees the run this one created)."""

REPLACE_CURRENT: Final = """
UPDATE current_executions SET run_id = $3, status = 'running', start_request_id = $4
WHERE namespace = $1 AND workflow_id = $2"""
"""Point an existing (locked) current-execution row at a new run."""

LIST_EXECUTIONS: Final = """
SELECT workflow_id, run_id, workflow_type, task_queue, status, start_time, close_time,
       next_event_id, memo, parent_workflow_id, parent_run_id, first_run_id
FROM executions
WHERE namespace = $1
  AND ($2::text IS NULL OR status = $2)
  AND ($3::text IS NULL OR workflow_type = $3)
  AND ($4::text IS NULL OR task_queue = $4)
  AND ($5::text IS NULL OR workflow_id = $5)
  AND ($6::timestamptz IS NULL OR (start_time, run_id) < ($6, $7::text))
ORDER BY start_time DESC, run_id DESC
LIMIT $8"""

# ---------------------------------------------------------------- history

GET_EVENTS: Final = """
SELECT event_id, event_type, event_time, attributes::text AS attributes
FROM history_events
WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3 AND event_id >= $4 AND event_id < $5
ORDER BY event_id
LIMIT $6"""

GET_EVENT: Final = """
SELECT event_id, event_type, event_time, attributes::text AS attributes
FROM history_events
WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3 AND event_id = $4"""

_REQUEST_SEEN = """
SELECT EXISTS (
    SELECT 1 FROM history_events h
    WHERE h.namespace = $1 AND h.workflow_id = $2
      AND h.event_type = '{event_type}' AND h.attributes->>'request_id' = $4
      AND (SELECT e.first_run_id FROM executions e
           WHERE e.namespace = $1 AND e.workflow_id = $2 AND e.run_id = h.run_id)
        = (SELECT x.first_run_id FROM executions x
           WHERE x.namespace = $1 AND x.workflow_id = $2 AND x.run_id = $3))"""

SIGNAL_SEEN: Final = _REQUEST_SEEN.format(event_type="SignalReceived")
"""Whether a signal with request id ``$4`` was recorded on any run of run ``$3``'s chain (its
``first_run_id``'s): a retried signal that reaches the chain's next run after a continue-as-new,
a retry or a reset is recorded once (docs/decisions.md §22). One probe of
``history_signal_request_ids`` (by workflow id and request id), then each run it finds by
its key (usually none)."""

CANCEL_SEEN: Final = _REQUEST_SEEN.format(event_type="WorkflowCancelRequested")
"""``SIGNAL_SEEN`` for a cancellation request (``history_cancel_request_ids``): a retried
cancel that reaches the chain's next run is not applied to it (docs/decisions.md §22). The
event type is in the text, not a parameter, so that the partial index serves the plan."""

UPDATE_EVENTS: Final = """
SELECT event_id, event_type, event_time, attributes::text AS attributes
FROM history_events
WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3
  AND event_type IN ('UpdateAccepted', 'UpdateCompleted') AND attributes->>'update_id' = $4
ORDER BY event_id"""

# ---------------------------------------------------------------- the transition write

_TRANSITION_HEAD: Final = """
WITH
upd_exec AS (
    UPDATE executions
    SET next_event_id = $8, status = $9, state = $10::jsonb, close_time = $11,
        sticky_identity = $12, last_workflow_task_failure = $13::jsonb
    WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3 AND $14::boolean
      AND ((SELECT $35::xid) IS NULL OR xmin = (SELECT $35::xid))
    RETURNING xmin AS version, watched_until > now() AS watched
),
guard AS (
    SELECT (SELECT $35::xid) IS NULL OR EXISTS (SELECT FROM upd_exec) AS ok
)"""

_SKIP_LOCKED_HEAD: Final = """
WITH
free AS MATERIALIZED (
    SELECT 1 FROM executions
    WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3 AND xmin = (SELECT $35::xid)
    FOR NO KEY UPDATE SKIP LOCKED
),
upd_exec AS (
    UPDATE executions
    SET next_event_id = $8, status = $9, state = $10::jsonb, close_time = $11,
        sticky_identity = $12, last_workflow_task_failure = $13::jsonb
    WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3 AND $14::boolean
      AND xmin = (SELECT $35::xid) AND EXISTS (SELECT FROM free)
    RETURNING xmin AS version, watched_until > now() AS watched
),
guard AS (
    SELECT EXISTS (SELECT FROM upd_exec) AS ok
)"""
"""The guarded head (``$35`` set) that never waits for the execution row: when another
transaction holds its lock, nothing is written, as when the row changed
(``transition_statement(skip_locked=True)``; a dispatch then tries another task)."""

_CREATE_HEAD: Final = """
WITH
new_current AS (
    INSERT INTO current_executions (namespace, workflow_id, run_id, status, start_request_id)
    VALUES ($1, $2, $3, 'running', $40)
    ON CONFLICT (namespace, workflow_id) DO NOTHING
    RETURNING run_id
),
guard AS (
    SELECT EXISTS (SELECT FROM new_current) AS ok
),
ins_exec AS (
    INSERT INTO executions (namespace, workflow_id, run_id, workflow_type, task_queue, status,
                            next_event_id, state, start_time, close_time, memo, sticky_identity,
                            last_workflow_task_failure, first_run_id, start_request_id)
    SELECT $1, $2, $3, $36, $37, $9, $8, $10::jsonb, $38, $11, $39::jsonb, $12, $13::jsonb, $3, $40
    WHERE (SELECT ok FROM guard)
    RETURNING xmin AS version
)"""
"""The head of a new run's first write (``transition_statement(create=True)``): the current
execution row only if the workflow id has none, and the execution row (with the state after
the first events) only if that insert did; every part is guarded by it. ``$36``..``$40``: the
workflow type, task queue, start time, memo JSON and start request id."""

TRANSITION_PARTS: Final = {
    "events": """
ins_events AS (
    INSERT INTO history_events (namespace, workflow_id, run_id, event_id, event_type, event_time,
                                attributes)
    SELECT $1, $2, $3, e.id, e.type, e.time, e.attrs::jsonb
    FROM unnest($4::bigint[], $5::text[], $6::timestamptz[], $7::text[]) AS e(id, type, time, attrs)
    WHERE (SELECT ok FROM guard)
)""",
    "close_current": """
upd_current AS (
    UPDATE current_executions SET status = $9
    WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3 AND status <> $9 AND $14::boolean
      AND (SELECT ok FROM guard)
)""",
    "delete_all": """
del_tasks AS (
    DELETE FROM tasks WHERE id IN (
        SELECT t.id FROM tasks t
        WHERE t.namespace = $1 AND t.workflow_id = $2 AND t.run_id = $3
          AND (SELECT ok FROM guard)
        FOR UPDATE SKIP LOCKED)
),
del_timers AS (
    DELETE FROM timers t
    WHERE t.namespace = $1 AND t.workflow_id = $2 AND t.run_id = $3 AND (SELECT ok FROM guard)
),
del_activities AS (
    DELETE FROM activities a
    WHERE a.namespace = $1 AND a.workflow_id = $2 AND a.run_id = $3 AND (SELECT ok FROM guard)
)""",
    "delete_tasks": """
del_listed_tasks AS (
    DELETE FROM tasks WHERE id IN (
        SELECT t.id FROM tasks t
        WHERE t.namespace = $1 AND t.workflow_id = $2 AND t.run_id = $3
          AND t.scheduled_event_id = ANY($17::bigint[])
          AND (t.kind, t.scheduled_event_id) IN (
                SELECT k, s FROM unnest($16::text[], $17::bigint[]) AS d(k, s))
          AND (SELECT ok FROM guard)
        FOR UPDATE OF t SKIP LOCKED)
)""",
    "insert_tasks": """
ins_tasks AS (
    INSERT INTO tasks (kind, namespace, task_queue, workflow_id, run_id, scheduled_event_id,
                       sticky_identity)
    SELECT t.k, $1, t.q, $2, $3, t.s, t.st
    FROM unnest($18::text[], $19::text[], $20::bigint[], $21::text[]) AS t(k, q, s, st)
    WHERE (SELECT ok FROM guard)
)""",
    "delete_timers": """
del_listed_timers AS (
    DELETE FROM timers t
    WHERE t.namespace = $1 AND t.workflow_id = $2 AND t.run_id = $3
      AND t.ref_id = ANY($23::bigint[])
      AND (t.kind, t.ref_id) IN (SELECT k, r FROM unnest($22::text[], $23::bigint[]) AS d(k, r))
      AND (SELECT ok FROM guard)
)""",
    "insert_timers": """
ins_timers AS (
    INSERT INTO timers (kind, namespace, workflow_id, run_id, ref_id, attempt, fire_at)
    SELECT t.k, $1, $2, $3, t.r, t.a, t.f
    FROM unnest($24::text[], $25::bigint[], $26::integer[], $27::timestamptz[]) AS t(k, r, a, f)
    WHERE (SELECT ok FROM guard)
)""",
    "delete_activities": """
del_listed_activities AS (
    DELETE FROM activities a
    WHERE a.namespace = $1 AND a.workflow_id = $2 AND a.run_id = $3
      AND a.scheduled_event_id = ANY($28::bigint[])
      AND (SELECT ok FROM guard)
)""",
    "insert_activities": """
ins_activities AS (
    INSERT INTO activities (namespace, workflow_id, run_id, scheduled_event_id, state, attempt,
                            scheduled_time, attempt_scheduled_time, started_time,
                            last_worker_identity, attributes, eager_request_id)
    SELECT $1, $2, $3, a.s, CASE WHEN a.w = '' THEN 'scheduled' ELSE 'started' END, 1, a.t, a.t,
           CASE WHEN a.w = '' THEN NULL ELSE a.t END, a.w, a.attrs::jsonb, a.r
    FROM unnest($29::bigint[], $30::timestamptz[], $31::text[], $34::text[], $41::text[])
         AS a(s, t, attrs, w, r)
    WHERE (SELECT ok FROM guard)
)""",
}
"""The optional parts of a transition's write (data-modifying CTEs), by name; see
``transition_statement``."""

_TRANSITION_RESULT: Final = """
SELECT (SELECT ok FROM guard) AS applied, (SELECT version FROM {}) AS version"""
_TRANSITION_NOTIFY: Final = """,
       (SELECT count(pg_notify(n.c, n.p)) FROM unnest($32::text[], $33::text[]) AS n(c, p)
        WHERE (SELECT ok FROM guard)) AS notified"""
_TRANSITION_ANNOUNCE: Final = """,
       (SELECT count(pg_notify('chronicle_run', $15)) FROM upd_exec WHERE watched) AS announced"""
_PARAMETER: Final = re.compile(r"\$(\d+)")


@functools.cache
def transition_statement(
    parts: frozenset[str],
    notify: bool,
    *,
    create: bool = False,
    skip_locked: bool = False,
    announce: bool = False,
) -> tuple[str, tuple[int, ...]]:
    """A transition's whole write, made of only the ``parts`` it needs, and which arguments it
    takes: ``(statement, indexes)``, where ``indexes`` picks (0-based) from the 41 arguments
    numbered ``$1``..``$41`` in the parts; the statement numbers them ``$1``.. again.

    The execution update (and the guard) is always there, or with ``create`` the new run's
    rows (``_CREATE_HEAD``), or with ``skip_locked`` the guarded update that does not wait for
    a locked row (``_SKIP_LOCKED_HEAD``); ``notify`` adds the ``pg_notify`` of ``$32``/``$33``;
    ``announce`` (not with ``create``) adds the run's ``chronicle_run`` notification, payload
    ``$15``, sent only when the updated row is watched (``watched_until`` ahead:
    ``WATCH_RUN``).
    Only these constant texts are combined, never request data. A part left out costs nothing,
    where an empty one still costs its executor set-up (≈ 0.07 ms of Postgres CPU for the 8 a
    typical step does not use; docs/transition-sql.md). Each variant is prepared once per
    connection and keeps its cached generic plan.

    ``$35``: NULL when the caller holds the execution row lock (the locked path). Otherwise the
    ``xmin`` of the execution row version the caller read without a lock (the fast path,
    docs/fastpath.md): the execution update applies only to that very version, and every other
    write (and the notifications) only when it did. Read as ``(SELECT $35::xid)`` so that a
    custom plan cannot prune a branch and look cheaper than the generic one (else Postgres
    would re-plan the statement, ≈ 0.4 ms, on every call). The listed deletes find their rows
    by index (the listed ids are index conditions), so their cost does not grow with the run's
    pending rows. The result: ``applied`` and ``version``, the execution row's new ``xmin``
    (NULL when it was not written).
    """
    unknown = parts - TRANSITION_PARTS.keys()
    if unknown:
        raise ValueError(f"unknown transition parts: {sorted(unknown)}")
    ctes = [TRANSITION_PARTS[name] for name in TRANSITION_PARTS if name in parts]
    if create:
        head, execution = _CREATE_HEAD, "ins_exec"
    else:
        head, execution = (_SKIP_LOCKED_HEAD if skip_locked else _TRANSITION_HEAD), "upd_exec"
    text = ",".join([head, *ctes]) + _TRANSITION_RESULT.format(execution)
    if notify:
        text += _TRANSITION_NOTIFY
    if announce:
        if create:
            raise ValueError("a new run has no watchers to announce its first events to")
        text += _TRANSITION_ANNOUNCE
    used = sorted({int(n) for n in _PARAMETER.findall(text)})
    number = {old: new for new, old in enumerate(used, start=1)}
    statement = _PARAMETER.sub(lambda m: f"${number[int(m.group(1))]}", text)
    return statement, tuple(n - 1 for n in used)


INSERT_FOREIGN_TIMER: Final = """
WITH ins AS (
    INSERT INTO timers (kind, namespace, workflow_id, run_id, ref_id, attempt, fire_at)
    VALUES ($1, $2, $3, $4, $5, 1, $6)
)
SELECT pg_notify('chronicle_timer', $7)"""
"""A timer row for another run (a child's close reported to its parent), due now."""

# ---------------------------------------------------------------- activities

LOCK_ACTIVITIES: Final = """
SELECT scheduled_event_id, state, attempt, scheduled_time, attempt_scheduled_time, started_time,
       last_heartbeat_time, heartbeat_details::text AS heartbeat_details,
       last_failure::text AS last_failure, last_worker_identity, attributes::text AS attributes
FROM activities
WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3 AND scheduled_event_id = ANY($4::bigint[])
FOR UPDATE"""

LOCK_EXECUTION_AND_ACTIVITIES: Final = """
WITH
execution AS MATERIALIZED (
    SELECT state, sticky_identity, last_workflow_task_failure, parent_namespace,
           parent_workflow_id, parent_run_id, parent_initiated_event_id
    FROM executions WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3
    FOR UPDATE
),
locked AS MATERIALIZED (
    SELECT scheduled_event_id AS a_scheduled_event_id, state AS a_state, attempt AS a_attempt,
           scheduled_time AS a_scheduled_time, attempt_scheduled_time AS a_attempt_scheduled_time,
           started_time AS a_started_time, last_heartbeat_time AS a_last_heartbeat_time,
           heartbeat_details::text AS a_heartbeat_details, last_failure::text AS a_last_failure,
           last_worker_identity AS a_last_worker_identity, attributes::text AS a_attributes
    FROM activities
    WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3
      AND scheduled_event_id = ANY($4::bigint[]) AND EXISTS (SELECT FROM execution)
    FOR UPDATE
)
SELECT * FROM execution LEFT JOIN locked ON true"""
"""``LOCK_EXECUTION`` and ``LOCK_ACTIVITIES`` in one round trip: one row per locked activity
(its columns prefixed ``a_``; NULL when none is found), no row when the run does not exist.
The activities' ``EXISTS`` on ``execution`` keeps the lock order execution → activities."""

LIST_ACTIVITIES: Final = """
SELECT scheduled_event_id, state, attempt, scheduled_time, attempt_scheduled_time, started_time,
       last_heartbeat_time, heartbeat_details::text AS heartbeat_details,
       last_failure::text AS last_failure, last_worker_identity, attributes::text AS attributes
FROM activities
WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3
ORDER BY scheduled_event_id"""

UPDATE_ACTIVITY: Final = """
UPDATE activities
SET state = $5, attempt = $6, attempt_scheduled_time = $7, started_time = $8,
    last_heartbeat_time = $9, heartbeat_details = $10::jsonb, last_failure = $11::jsonb,
    last_worker_identity = $12
WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3 AND scheduled_event_id = $4"""

# ---------------------------------------------------------------- matching

LEASE_TASK: Final = """
DELETE FROM tasks WHERE id = (
    SELECT id FROM tasks
    WHERE namespace = $1 AND task_queue = $2 AND kind = $3
      AND (sticky_identity = '' OR sticky_identity = $4 OR created_at < now() - $5::interval)
    ORDER BY id
    LIMIT 1
    FOR UPDATE SKIP LOCKED)
RETURNING workflow_id, run_id, scheduled_event_id"""

PEEK_WORKFLOW_TASKS: Final = """
SELECT t.workflow_id, t.run_id, t.scheduled_event_id, e.xmin AS version, e.state,
       e.sticky_identity, e.last_workflow_task_failure,
       e.parent_workflow_id IS NOT NULL AS has_parent
FROM tasks t
LEFT JOIN executions e
  ON e.namespace = t.namespace AND e.workflow_id = t.workflow_id AND e.run_id = t.run_id
WHERE t.namespace = $1 AND t.task_queue = $2 AND t.kind = $3
  AND (t.sticky_identity = '' OR t.sticky_identity = $4 OR t.created_at < now() - $5::interval)
ORDER BY t.id
LIMIT 3"""
"""The first 3 rows (``dispatch.CANDIDATES``) that ``LEASE_TASK`` would take, without
deleting or locking them, each with its run's execution row (``READ_EXECUTION``'s columns;
``version`` NULL when the run is not there): the candidates of a dispatch on the alone path
(``dispatch.py``). The limit is in the text: as a parameter, Postgres would plan for 30 rows,
never keep the generic plan, and re-plan every poll (0.12 ms, against 0.03 ms to run it)."""

DISPATCH_ACTIVITY: Final = """
WITH task AS (
    DELETE FROM tasks WHERE id = (
        SELECT id FROM tasks
        WHERE namespace = $1 AND task_queue = $2 AND kind = 'activity'
        ORDER BY id
        LIMIT 1
        FOR UPDATE SKIP LOCKED)
    RETURNING workflow_id, run_id, scheduled_event_id
),
started AS (
    UPDATE activities a
    SET state = 'started', started_time = $3::timestamptz, last_worker_identity = $4::text,
        eager_request_id = $5::text
    FROM task t
    WHERE a.namespace = $1 AND a.workflow_id = t.workflow_id AND a.run_id = t.run_id
      AND a.scheduled_event_id = t.scheduled_event_id AND a.state = 'scheduled'
    RETURNING a.workflow_id, a.run_id, a.scheduled_event_id, a.attempt, a.scheduled_time,
              a.attempt_scheduled_time, a.heartbeat_details, a.attributes,
              -- every ActivityScheduled records a start-to-close (engine/commands.py)
              $3::timestamptz + make_interval(
                  secs => (a.attributes->>'start_to_close_timeout')::float8) AS close_at,
              $3::timestamptz + make_interval(secs => (a.attributes->>'heartbeat_timeout')::float8)
                  AS heartbeat_at
),
timers AS (
    INSERT INTO timers (kind, namespace, workflow_id, run_id, ref_id, attempt, fire_at)
    SELECT 'activity_start_to_close', $1, s.workflow_id, s.run_id, s.scheduled_event_id,
           s.attempt, s.close_at
    FROM started s
    UNION ALL
    SELECT 'activity_heartbeat', $1, s.workflow_id, s.run_id, s.scheduled_event_id,
           s.attempt, s.heartbeat_at
    FROM started s WHERE s.heartbeat_at IS NOT NULL
)
SELECT t.workflow_id, t.run_id, t.scheduled_event_id, s.attempt, s.scheduled_time,
       s.attempt_scheduled_time, s.heartbeat_details::text AS heartbeat_details,
       s.attributes::text AS attributes, e.workflow_type,
       CASE WHEN s.attempt IS NOT NULL THEN pg_notify('chronicle_timer',
           extract(epoch FROM least(s.close_at, s.heartbeat_at))::text) END AS notified
FROM task t
LEFT JOIN started s ON true
LEFT JOIN executions e
  ON e.namespace = $1 AND e.workflow_id = t.workflow_id AND e.run_id = t.run_id"""
"""Lease the next activity task, start its attempt and arm its timeouts: one statement. The
attempt records the poll's request id ``$5`` (``eager_request_id``, named for its first use: the
request id of the call whose answer alone carries the attempt), replacing any earlier call's, so
that a worker that lost the poll's answer can release it (``RELEASE_POLLED_TASKS``)."""

_PUT_BACK_SET: Final = (
    "state = 'scheduled', started_time = NULL, last_worker_identity = '', eager_request_id = ''"
)
"""An attempt put back as if never dispatched: ``scheduled`` again, held by no worker."""

_PUT_BACK: Final = """
disarmed AS (
    DELETE FROM timers t USING back b
    WHERE t.namespace = $1 AND t.workflow_id = b.workflow_id AND t.run_id = b.run_id
      AND t.ref_id = b.scheduled_event_id AND t.attempt = b.attempt
      AND t.kind IN ('activity_start_to_close', 'activity_heartbeat')
),
queued AS (
    INSERT INTO tasks (kind, namespace, task_queue, workflow_id, run_id, scheduled_event_id,
                       sticky_identity)
    SELECT 'activity', $1, b.task_queue, b.workflow_id, b.run_id, b.scheduled_event_id, ''
    FROM back b
    RETURNING task_queue
)"""
"""What follows a CTE ``back`` that put attempts back (``_PUT_BACK_SET``) and returns their
``workflow_id, run_id, scheduled_event_id, attempt, task_queue``: their start-to-close and
heartbeat timers disarmed, their task rows queued again (``queued``; the caller announces
them). The one way an attempt that never reached its worker goes back, uncounted:
``UNDISPATCH_ACTIVITY``, ``UNDISPATCH_EAGER_ACTIVITIES``, ``RELEASE_EAGER_TASKS``."""

UNDISPATCH_ACTIVITY: Final = f"""
WITH back AS (
    UPDATE activities
    SET {_PUT_BACK_SET}
    WHERE namespace = $1 AND last_worker_identity = $2 AND started_time = $3::timestamptz
      AND state = 'started'
    RETURNING workflow_id, run_id, scheduled_event_id, attempt, $4::text AS task_queue
),{_PUT_BACK}
SELECT count(*) AS requeued, (SELECT count(pg_notify('chronicle_task', $5)) FROM queued)
FROM queued"""
"""Undo ``DISPATCH_ACTIVITY``'s start of an attempt that never reached a worker: the attempt
that worker ``$2`` started at ``$3`` (the dispatch's own clock reading) goes back to
``scheduled``, its timers are disarmed and its task row is queued again on ``$4`` (notified
as ``$5``). Matches nothing if the dispatch did not commit or the attempt moved on."""

UNDISPATCH_EAGER_ACTIVITIES: Final = f"""
WITH back AS (
    UPDATE activities
    SET {_PUT_BACK_SET}
    WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3
      AND scheduled_event_id = ANY($4::bigint[]) AND attempt = 1 AND state = 'started'
      AND last_worker_identity = $5 AND started_time = $6::timestamptz
    RETURNING workflow_id, run_id, scheduled_event_id, attempt, $7::text AS task_queue
),{_PUT_BACK}
SELECT count(*) AS requeued, (SELECT count(pg_notify('chronicle_task', $8)) FROM queued)
FROM queued"""
"""Undo an eager start (``activity_task.start_eagerly``) whose caller never got it: the
activities ``$4`` of run ``$1/$2/$3`` that worker ``$5`` started at ``$6`` (their
``ActivityScheduled`` time) go back to ``scheduled`` as ``UNDISPATCH_ACTIVITY`` does, queued on
``$7`` (notified as ``$8``). Not the activities the same completion marked started because
the worker runs them inline (listed apart: it reports them itself). Matches nothing if that
write did not commit or the attempts moved on."""

# ---------------------------------------------------------------- timers

DUE_TIMERS: Final = """
SELECT id, namespace, workflow_id, run_id FROM timers
WHERE fire_at <= $1 ORDER BY fire_at LIMIT $2"""

NEXT_TIMER: Final = "SELECT min(fire_at) FROM timers"

TAKE_TIMER: Final = """
DELETE FROM timers WHERE id = $1 RETURNING kind, ref_id, attempt, fire_at"""

POSTPONE_TIMER: Final = "UPDATE timers SET fire_at = $2 WHERE id = $1"

# ---------------------------------------------------------------- activity rate limits

RESERVE_RATE_SLOT: Final = """
INSERT INTO task_queue_rate_limits AS r (namespace, task_queue, rate, next_at, granted_at)
VALUES ($1, $2, $3::float8, $4::timestamptz + make_interval(secs => 1.0 / $3::float8),
        $4::timestamptz)
ON CONFLICT (namespace, task_queue) DO UPDATE SET
    rate = EXCLUDED.rate,
    next_at = CASE WHEN r.next_at <= $4::timestamptz THEN EXCLUDED.next_at ELSE r.next_at END,
    granted_at = CASE WHEN r.next_at <= $4::timestamptz THEN $4::timestamptz
                      ELSE r.granted_at END
RETURNING granted_at = $4::timestamptz AS granted, next_at"""
"""Take the queue's next dispatch slot if it is due (spacing grants ``1 / rate`` s apart);
else say when it is due."""

RELEASE_RATE_SLOT: Final = """
UPDATE task_queue_rate_limits SET next_at = granted_at
WHERE namespace = $1 AND task_queue = $2 AND granted_at = $3::timestamptz"""
"""Give back a slot taken for a poll that found no task (unless another poll took one since)."""

RATE_LIMITED_QUEUES: Final = """
SELECT task_queue, rate FROM task_queue_rate_limits WHERE namespace = $1"""
"""The namespace's rate-limited task queues: their activities are never started eagerly."""

# ---------------------------------------------------------------- lost workers

UNSTICK_RUNS: Final = """
UPDATE executions SET sticky_identity = ''
WHERE namespace = $1 AND status = 'running' AND sticky_identity = $2"""
"""Runs sticky to a lost worker: their next workflow tasks go to any worker."""

OPEN_WORKER_SESSION: Final = """
WITH swept AS (
    DELETE FROM worker_sessions
    WHERE namespace = $2 AND identity = $3 AND opened_at < now()
)
INSERT INTO worker_sessions (session_id, namespace, identity, server_id)
VALUES ($1, $2, $3, $4)
RETURNING opened_at"""
"""A worker session opened on this server (``$4``): its row, opened at the database's ``now()``.
The same statement deletes the worker's older rows: a worker holds one session at a time, so
an older one is over for it (its server, frozen or killed, may not know yet)."""

CLOSE_WORKER_SESSION: Final = """
DELETE FROM worker_sessions WHERE session_id = $1 RETURNING opened_at"""
"""A worker session ended on its server: its row goes (``opened_at``, or no row when the open
never committed or a newer session of the worker swept it)."""

NEWER_WORKER_SESSION: Final = """
SELECT server_id FROM worker_sessions
WHERE namespace = $1 AND identity = $2 AND session_id <> $3 AND opened_at > $4
ORDER BY opened_at DESC LIMIT 1"""
"""The server holding the worker's newest session opened after ``$4`` (none: no such session
is open on any replica)."""

CLOSE_SERVER_SESSIONS: Final = "DELETE FROM worker_sessions WHERE server_id = $1"
"""A stopping server's worker sessions end with it."""

EXPIRE_WORKER_TASKS: Final = """
WITH
acts AS (
    UPDATE timers t SET fire_at = $3
    FROM activities a
    WHERE a.namespace = $1 AND a.last_worker_identity = $2 AND a.state = 'started'
      AND t.namespace = a.namespace AND t.workflow_id = a.workflow_id AND t.run_id = a.run_id
      AND t.kind = 'activity_start_to_close' AND t.ref_id = a.scheduled_event_id
      AND t.attempt = a.attempt AND t.fire_at > $3
    RETURNING t.id
),
wfts AS (
    UPDATE timers t SET fire_at = $3
    FROM history_events h
    WHERE t.namespace = $1 AND t.kind = 'workflow_task_timeout' AND t.fire_at > $3
      AND h.namespace = t.namespace AND h.workflow_id = t.workflow_id AND h.run_id = t.run_id
      AND h.event_id = t.ref_id AND h.attributes->>'identity' = $2
    RETURNING t.id
),
tasks_unstuck AS (
    UPDATE tasks SET sticky_identity = ''
    WHERE namespace = $1 AND sticky_identity = $2
    RETURNING kind, task_queue
)
SELECT (SELECT count(*) FROM acts) AS activities,
       (SELECT count(*) FROM wfts) AS workflow_tasks,
       pg_notify('chronicle_timer', $4),
       (SELECT array_agg(DISTINCT ARRAY[kind, task_queue]) FROM tasks_unstuck) AS queues"""
"""A lost worker's started activities and workflow tasks time out now (their start-to-close and
workflow-task timers fall due at ``$3``); its sticky task rows go to anyone."""

EXPIRE_WORKFLOW_TASK: Final = """
WITH moved AS (
    UPDATE timers SET fire_at = $5
    WHERE namespace = $1 AND workflow_id = $2 AND run_id = $3
      AND kind = 'workflow_task_timeout' AND ref_id = $4 AND fire_at > $5
      AND EXISTS (
          SELECT FROM history_events h
          WHERE h.namespace = $1 AND h.workflow_id = $2 AND h.run_id = $3 AND h.event_id = $4
            AND h.event_type = 'WorkflowTaskStarted' AND h.event_time = $7
            AND h.attributes->>'identity' = $8)
    RETURNING id
)
SELECT (SELECT count(*) FROM moved), pg_notify('chronicle_timer', $6)"""
"""A started workflow task (``$4``: its WorkflowTaskStarted event id) times out now (``$5``),
only if that event is the one a given write appended: its time ``$7`` and identity ``$8``
(another dispatch may have started the same task as the same event id)."""

RELEASE_EAGER_TASKS: Final = f"""
WITH
wft AS (
    UPDATE timers t SET fire_at = $6
    FROM history_events h
    WHERE t.namespace = $1 AND t.workflow_id = $2 AND t.run_id = $3
      AND t.kind = 'workflow_task_timeout' AND t.fire_at > $6
      AND h.namespace = $1 AND h.workflow_id = $2 AND h.run_id = $3 AND h.event_id = t.ref_id
      AND h.event_type = 'WorkflowTaskStarted'
      AND h.attributes->>'identity' = $4 AND h.attributes->>'request_id' = $5
    RETURNING t.id
),
back AS (
    UPDATE activities a
    SET {_PUT_BACK_SET}
    WHERE a.namespace = $1 AND a.workflow_id = $2 AND a.run_id = $3 AND a.state = 'started'
      AND a.last_worker_identity = $4 AND a.eager_request_id = $5
    RETURNING a.workflow_id, a.run_id, a.scheduled_event_id, a.attempt,
              a.attributes->>'task_queue' AS task_queue
),{_PUT_BACK}
SELECT (SELECT count(*) FROM wft) AS workflow_tasks, (SELECT count(*) FROM queued) AS activities,
       (SELECT array_agg(DISTINCT task_queue) FROM queued) AS queues,
       (SELECT count(pg_notify('chronicle_timer', $7)) FROM wft) AS notified"""
"""What worker ``$4``'s completion ``$5`` started eagerly on run ``$1/$2/$3`` and the worker
never received (``lost_answers.release``). The workflow task whose ``WorkflowTaskStarted``
records both times out now (``$6``): its timer falls due, the timer loop is told (``$7``). The
activity attempts that commit started for that worker (their rows record both:
``eager_request_id``, which a poll's start replaces with its own) go back to ``scheduled`` as
if never dispatched, as ``UNDISPATCH_ACTIVITY`` does for a poll that never got its task:
timers disarmed, task rows queued again (the caller notifies ``queues``), the attempt not
counted."""

RELEASE_POLLED_TASKS: Final = f"""
WITH
wft AS (
    UPDATE timers t SET fire_at = $4
    FROM history_events h
    WHERE t.namespace = $1 AND t.kind = 'workflow_task_timeout' AND t.fire_at > $4
      AND h.namespace = $1 AND h.workflow_id = t.workflow_id AND h.run_id = t.run_id
      AND h.event_id = t.ref_id AND h.event_type = 'WorkflowTaskStarted'
      AND h.attributes->>'identity' = $2 AND h.attributes->>'request_id' = ANY($3::text[])
    RETURNING t.id
),
back AS (
    UPDATE activities a
    SET {_PUT_BACK_SET}
    FROM timers s
    WHERE s.namespace = $1 AND s.kind = 'activity_start_to_close'
      AND a.namespace = $1 AND a.workflow_id = s.workflow_id AND a.run_id = s.run_id
      AND a.scheduled_event_id = s.ref_id AND a.attempt = s.attempt AND a.state = 'started'
      AND a.last_worker_identity = $2 AND a.eager_request_id = ANY($3::text[])
    RETURNING a.workflow_id, a.run_id, a.scheduled_event_id, a.attempt,
              a.attributes->>'task_queue' AS task_queue
),{_PUT_BACK}
SELECT (SELECT count(*) FROM wft) AS workflow_tasks, (SELECT count(*) FROM queued) AS activities,
       (SELECT array_agg(DISTINCT task_queue) FROM queued) AS queues,
       (SELECT count(pg_notify('chronicle_timer', $5)) FROM wft) AS notified,
       (SELECT count(pg_notify('chronicle_poll_released', k)) FROM unnest($6::text[]) AS k)
           AS ended"""
"""What the polls ``$3`` (their request ids) of worker ``$2`` in namespace ``$1`` started and
the worker never received (``lost_answers.release_polls``), on any run: the workflow tasks whose
``WorkflowTaskStarted`` records the worker and one of the ids time out now (``$4``; the timer
loop is told, ``$5``), the activity attempts whose rows record both go back to ``scheduled`` as
``RELEASE_EAGER_TASKS`` puts them back. Both are found through their armed timers (a workflow
task's timeout, an attempt's start-to-close), the namespace's few rows of ``timers``, as
``EXPIRE_WORKER_TASKS`` finds a lost worker's. ``$6``: the polls' ``notify.poll_key``s, announced
so that a server still running one of the polls ends it (``lost_answers.Polling``)."""

NOTIFY_TASKS: Final = "SELECT count(pg_notify('chronicle_task', k)) FROM unnest($1::text[]) AS k"

# ---------------------------------------------------------------- pending queries
# Queries handed out through Postgres, to a poller on any replica
# (``matching/remote_queries.py``). ``chronicle_query_offer`` carries a queue's task key (a
# query of that queue became claimable), ``chronicle_query`` a query id (its row changed).

PUBLISH_QUERY: Final = """
WITH swept AS (
    DELETE FROM pending_queries WHERE query_id IN (
        SELECT query_id FROM pending_queries WHERE deadline < now() FOR UPDATE SKIP LOCKED)
),
published AS (
    INSERT INTO pending_queries (query_id, namespace, workflow_id, run_id, task_queue,
        workflow_type, name, args, validate_update, origin, pickup_by, deadline, hand_offs, lost)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10,
            now() + make_interval(secs => $11), now() + make_interval(secs => $12), $13, $14)
    ON CONFLICT (query_id) DO NOTHING
    RETURNING query_id
)
SELECT count(pg_notify('chronicle_query_offer', $15)) FROM published"""
"""Write query ``$1`` (claimable until ``$11`` s from now unless taken, answerable for ``$12``
s) and announce its queue (``$15``); sweep rows past their deadline (of an asking process that
died), skipping rows another statement holds. A row of ``$1`` already there (an earlier
attempt whose failure hid its commit) stays as it is, and nothing is announced again."""

CLAIM_QUERY: Final = """
WITH picked AS (
    SELECT query_id FROM pending_queries
    WHERE namespace = $1 AND task_queue = $2 AND taker IS NULL AND NOT answered
      AND deadline > now() AND (hand_offs > 0 OR pickup_by > now())
    ORDER BY created_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED
),
claimed AS (
    UPDATE pending_queries q
    SET taker = $3, taker_server = $4, claim_id = $5, hand_offs = q.hand_offs + 1
    FROM picked WHERE q.query_id = picked.query_id
    RETURNING q.query_id, q.workflow_id, q.run_id, q.workflow_type, q.name, q.args::text AS args,
              q.validate_update, q.hand_offs
)
SELECT c.*, pg_notify('chronicle_query', c.query_id) AS notified FROM claimed c"""
"""Hand the oldest claimable query of queue ``$1/$2`` to poller ``$3`` of server ``$4`` (claim
``$5``). The row lock and the re-checked ``taker IS NULL`` make each hand-off exclusive; a
row past its deadline (or never taken by its ``pickup_by``) is never claimed."""

READ_QUERY: Final = """
SELECT taker, hand_offs, lost, answered, result::text AS result, failure::text AS failure
FROM pending_queries WHERE query_id = $1"""

ANSWER_QUERY: Final = """
WITH answered AS (
    UPDATE pending_queries SET answered = true, result = $2::jsonb, failure = $3::jsonb
    WHERE query_id = $1 AND NOT answered AND deadline > now()
    RETURNING query_id
)
SELECT count(pg_notify('chronicle_query', query_id)) FROM answered"""
"""Record the first answer to query ``$1`` (0: it is gone, answered or past its deadline)."""

WITHDRAW_UNCLAIMED_QUERY: Final = """
DELETE FROM pending_queries WHERE query_id = $1 AND taker IS NULL AND hand_offs = $2
RETURNING query_id"""
"""The asking process takes back query ``$1`` unless a poll claimed it since it had ``$2``
hand-offs (none: a claim came first, or there is no row)."""

DELETE_QUERY: Final = "DELETE FROM pending_queries WHERE query_id = $1"

_RELEASED_QUERY = """
    SET taker = NULL, taker_server = NULL, claim_id = NULL,
        lost = array_append(lost, format('worker %L: %s', taker, $REASON::text))"""

RELEASE_WORKER_QUERIES: Final = f"""
WITH released AS (
    UPDATE pending_queries{_RELEASED_QUERY.replace("$REASON", "$4")}
    WHERE namespace = $1 AND taker = $2 AND taker_server = $3 AND NOT answered
      AND deadline > now()
    RETURNING query_id, namespace, task_queue, workflow_id, run_id, hand_offs
)
SELECT r.*, pg_notify('chronicle_query', r.query_id) AS notified FROM released r"""
"""Give back the queries that pollers of server ``$3`` claimed for worker ``$2`` of namespace
``$1`` (its session ended: ``$4``); the caller announces their queues."""

RELEASE_CLAIM: Final = f"""
WITH released AS (
    UPDATE pending_queries{_RELEASED_QUERY.replace("$REASON", "$2")}
    WHERE claim_id = $1 AND NOT answered AND deadline > now()
    RETURNING query_id, namespace, task_queue, workflow_id, run_id, hand_offs
)
SELECT r.*, pg_notify('chronicle_query', r.query_id) AS notified FROM released r"""
"""Give back what claim ``$1`` took: its poll ended before it returned it (``$2``)."""

NOTIFY_QUERY_OFFERS: Final = (
    "SELECT count(pg_notify('chronicle_query_offer', k)) FROM unnest($1::text[]) AS k"
)
