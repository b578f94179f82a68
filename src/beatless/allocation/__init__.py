"""The monthly and weekly credit jobs' cores (PostgreSQL; connections passed in).

- `allocate_month(ctx, SHARED | GRAPHS)`: shared_credit_allocation and
  graph_credit_allocation — one allocation per account and month
  (`beatless.allocation.monthly`);
- `check_credit_health(ctx, settings)`: credit_health_check — read-only
  reconciliation that raises on an inconsistency (`beatless.allocation.health`);
- `summarize_month(ctx)`: monthly_usage_summary — one summary per graph and
  month (`beatless.allocation.summary`).
"""

from __future__ import annotations

from beatless.allocation.health import CreditInconsistency, HealthSettings, check_credit_health, week_of
from beatless.allocation.monthly import GRAPHS, SHARED, Subjects, allocate_month, due_figures
from beatless.allocation.summary import summarize_month

__all__ = [
    "GRAPHS",
    "SHARED",
    "CreditInconsistency",
    "HealthSettings",
    "Subjects",
    "allocate_month",
    "check_credit_health",
    "due_figures",
    "summarize_month",
    "week_of",
]
