"""``sql.transition_statement``: a transition's write made of only the parts it needs."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import pytest

from chronicle.server.store import sql

ALL_PARTS = frozenset(sql.TRANSITION_PARTS)


def test_parameters_are_renumbered_without_gaps() -> None:
    for parts in (frozenset(), frozenset({"events"}), ALL_PARTS):
        for notify, announce in ((False, False), (True, False), (False, True), (True, True)):
            statement, picks = sql.transition_statement(parts, notify, announce=announce)
            numbers = sorted({int(n) for n in re.findall(r"\$(\d+)", statement)})
            assert numbers == list(range(1, len(picks) + 1))
            assert list(picks) == sorted(picks)
            assert {0, 1, 2, 34} <= set(picks)  # the run key and the fast path's guard


def test_a_part_left_out_is_not_in_the_statement() -> None:
    statement, picks = sql.transition_statement(frozenset({"insert_timers"}), False)
    assert "ins_timers AS" in statement
    assert "ins_events AS" not in statement
    assert "pg_notify" not in statement
    assert 3 not in picks  # $4, the event ids


def test_announce_adds_the_watched_run_notification() -> None:
    statement, picks = sql.transition_statement(frozenset({"events"}), False, announce=True)
    assert "FROM upd_exec WHERE watched" in statement
    sent = re.search(r"pg_notify\('chronicle_run', \$(\d+)\)", statement)
    assert sent is not None
    assert picks[int(sent.group(1)) - 1] == 14  # the old $15: the run key
    with pytest.raises(ValueError, match="no watchers"):
        sql.transition_statement(frozenset({"events"}), False, create=True, announce=True)


def test_unknown_part_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown transition parts: \\['evnts'\\]"):
        sql.transition_statement(frozenset({"evnts"}), False)


async def test_every_part_prepares_with_its_original_parameter_types(
    db: asyncpg.Connection,
) -> None:
    """Renumbering keeps each argument's type: the types Postgres infers for a variant are those
    of the same arguments in the statement with every part."""
    full, full_picks = sql.transition_statement(ALL_PARTS, True, announce=True)
    full_types = _types(await db.prepare(full))
    assert len(full_types) == len(full_picks)
    type_of = dict(zip(full_picks, full_types, strict=True))
    variants = [frozenset({name}) for name in sql.TRANSITION_PARTS] + [frozenset()]
    for parts in variants:
        for notify, announce in ((False, False), (True, True)):
            statement, picks = sql.transition_statement(parts, notify, announce=announce)
            assert _types(await db.prepare(statement)) == [type_of[i] for i in picks], parts


def _types(statement: Any) -> list[str]:
    return [t.name for t in statement.get_parameters()]
