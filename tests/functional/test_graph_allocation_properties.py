"""Property: whatever the order of monthly runs, their replays and the balance
changes in between, each month is allocated once, the grant is exactly
min(requested, cap - balance at the first run) (never negative), and the
balance equals the ledger. Real PostgreSQL, through the Lambda handler."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graph_credit_allocation
from beatless import credits
from tests.support.allocation import CREDIT, allocations, balance, context, graph, tick

TIERS = {  # tier: (monthly allocation, cap) in credits, as migration 0001 defines them
    "standard": (8_000, 16_000),
    "large": (32_000, 64_000),
    "xlarge": (100_000, 200_000),
}
MONTHS = [datetime(2026, m, 1, 3, 30, tzinfo=UTC) for m in (1, 2, 3, 4)]
_names = itertools.count()

steps = st.lists(
    st.one_of(
        st.tuples(st.just("run"), st.integers(0, len(MONTHS) - 1)),
        st.tuples(st.just("adjust"), st.integers(-30_000, 30_000).filter(bool)),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tier=st.sampled_from(sorted(TIERS)), start=st.integers(-5_000, 250_000), plan=steps)
def test_allocations_are_idempotent_capped_and_exact(
    conn: psycopg.Connection, tier: str, start: int, plan: list[tuple[str, int]]
) -> None:
    name = f"p{next(_names)}"
    account = graph(conn, name, tier, balance=start)
    requested, cap = (amount * CREDIT for amount in TIERS[tier])
    model = start * CREDIT
    granted: dict[str, int] = {}
    for i, (action, value) in enumerate(plan):
        if action == "adjust":
            credits.post(conn, account, "adjustment", value * CREDIT, f"{name}:adjust:{i}")
            model += value * CREDIT
            continue
        month = MONTHS[value].strftime("%Y-%m")
        graph_credit_allocation.handler(tick(MONTHS[value], execution_id=f"{name}-{i}"), context())
        if month not in granted:
            granted[month] = max(0, min(requested, cap - model))
            model += granted[month]
        assert balance(conn, account) == model
    mine = {month: row for (acc, month), row in allocations(conn).items() if acc == account}
    assert mine == {month: (tier, requested, amount) for month, amount in granted.items()}
    assert credits.ledger_sum(conn, account) == balance(conn, account) == model
