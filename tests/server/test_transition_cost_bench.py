"""``python -m bench.transition_cost`` keeps working as the transition statement grows: its
step supplies every argument a variant's statement picks, and a round of each variant runs
against a real Postgres (figures are not checked: only that the statements run)."""

from __future__ import annotations

from datetime import UTC, datetime

from bench import transition_cost
from chronicle.server.store import sql


def test_a_step_supplies_every_argument_a_variant_picks() -> None:
    arguments = transition_cost._step_arguments(2, datetime.now(UTC))
    # every part of the statement, as in the variant "every part, notified"
    _, picks = sql.transition_statement(frozenset(sql.TRANSITION_PARTS), True, announce=True)
    assert max(picks) == len(arguments) - 1  # $1..$N, one argument each, none left over
    for name, (_, picks) in transition_cost._variants().items():
        assert max(picks) < len(arguments), name


async def test_every_variant_runs_on_postgres(database_url: str) -> None:
    figures = await transition_cost._measure(database_url, 1)
    assert set(figures) == set(transition_cost._variants())
    assert all(len(rounds) == transition_cost.ROUNDS for rounds in figures.values())
