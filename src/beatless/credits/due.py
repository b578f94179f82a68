"""Who is due a monthly credit allocation, and how much: the rules both the
allocation jobs (`beatless.credits.allocation`) and the health check
(`beatless.credits.health`) apply.

- `SHARED`: subscriptions to a shared repository, the plan's monthly
  allocation up to the plan's balance cap; `GRAPHS`: graphs, by the tier in
  force, up to the tier's cap (`Subjects`: the SQL of each);
- a subject is due at T when it is active AT T; the amount comes from the
  tier (or plan) in force AT T; granted = max(0, min(requested, cap - balance));
- `due_figures`: the subjects due at T and not yet allocated for the month.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any


@dataclass(frozen=True)
class Subjects:
    """SQL fragments describing who is due an allocation at %(at)s (alias `s`
    for the subject, `r` for its tier/plan row with the amounts)."""

    kind: str  # the middle of the idempotency key
    account_column: str  # credit_accounts column that points at the subject
    rule: str  # expression naming the tier / plan used
    source: str  # FROM ... JOIN ... (subject s, rule row r)
    active: str  # WHERE condition: active at %(at)s


SHARED = Subjects(
    kind="subscription",
    account_column="subscription_id",
    rule="s.plan",
    source="repository_subscriptions s JOIN subscription_plans r ON r.name = s.plan",
    active="s.started_at <= %(at)s AND (s.ended_at IS NULL OR s.ended_at > %(at)s)",
)

GRAPHS = Subjects(
    kind="graph",
    account_column="graph_id",
    rule="cur.tier",
    # The tier in force at T: the latest history row that took effect at or before T.
    source=(
        "graphs s CROSS JOIN LATERAL (SELECT h.tier FROM graph_tier_history h "
        "WHERE h.graph_id = s.id AND h.effective_from <= %(at)s "
        "ORDER BY h.effective_from DESC LIMIT 1) cur "
        "JOIN tiers r ON r.name = cur.tier"
    ),
    active="(s.deleted_at IS NULL OR s.deleted_at > %(at)s)",
)

NOT_ALLOCATED = (
    "NOT EXISTS (SELECT 1 FROM monthly_allocations m WHERE m.account_id = a.id AND m.month = %(month)s)"
)


def granted_sql(balance: str) -> str:
    return f"greatest(0, least(r.monthly_allocation_micro, r.balance_cap_micro - {balance}))"


def due_figures_sql(subjects: Subjects) -> str:
    """Subjects due and not yet allocated this month (with or without an account):
    how many, what they would be granted now, how many would be capped, how many
    have no account yet. Read-only: the remaining count and the dry run."""
    granted = granted_sql("coalesce(a.balance_micro, 0)")
    return (
        f"SELECT count(*), coalesce(sum({granted}), 0), "
        f"count(*) FILTER (WHERE {granted} < r.monthly_allocation_micro), "
        f"count(*) FILTER (WHERE a.id IS NULL) "
        f"FROM {subjects.source} LEFT JOIN credit_accounts a ON a.{subjects.account_column} = s.id "
        f"WHERE {subjects.active} AND (a.id IS NULL OR {NOT_ALLOCATED})"
    )


@dataclass(frozen=True)
class DueFigures:
    subjects: int  # due and not allocated yet
    grant_micro: int  # what they would be granted at current balances
    capped: int  # of which would get less than the full amount
    without_account: int  # of which have no credit account yet

    def as_dict(self) -> dict[str, int]:
        return {
            "subjects": self.subjects,
            "grant_micro": self.grant_micro,
            "capped": self.capped,
            "without_account": self.without_account,
        }


def due_figures(conn: Any, subjects: Subjects, at: datetime, month: date) -> DueFigures:
    row = conn.execute(due_figures_sql(subjects), {"at": at, "month": month}).fetchone()
    return DueFigures(int(row[0]), int(row[1]), int(row[2]), int(row[3]))
