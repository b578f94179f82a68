"""Monthly credit allocations: one per account and month, never two.

Two kinds of subject get credits on a monthly schedule:

- `SHARED`: subscriptions to a shared repository (`shared_credit_allocation`),
  the plan's monthly allocation, up to the plan's balance cap;
- `GRAPHS`: graphs (`graph_credit_allocation`), by tier, up to the tier's
  balance cap.

The rules, all derived from the run's scheduled time T (never the clock):

- the business month is the month of T (`beatless.jobrun.month_of`);
- a subject is due when it is active AT T: a subscription with
  started_at <= T < ended_at (ended_at NULL = open); a graph not deleted at T
  that has a tier in force at T. A subscription starting a second after T, or
  a graph created after T, waits for the next month; one that ended exactly
  at T gets nothing;
- the amount comes from the tier (or plan) in force AT T: a graph whose tier
  changes in mid-month gets the new tier's allocation from the next month on
  (the history row effective at T decides; later rows never reach back);
- granted = max(0, min(requested, cap - balance)), on the balance at the
  moment of the grant (the account row is locked). A balance already at or
  above the cap is granted 0 and STILL gets its ledger entry and its
  `monthly_allocations` row: the allocation for that month has happened, a
  replay must not top the balance up later;
- a due subject without a credit account gets one (empty) first.

Exactly once: `monthly_allocations` has PRIMARY KEY (account_id, month) and the
ledger entry's UNIQUE idempotency key is `allocation:<kind>:<account>:<YYYY-MM>`.
The ledger entry (which moves the balance, by trigger) and the allocation row
are written by ONE statement, in the transaction that holds the account's row
lock and has just re-checked that no allocation exists. A replay, a retry or a
concurrent run finds the row and does nothing; a run killed mid-chunk rolls
the whole chunk back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from beatless.allocation.sweep import sweep
from beatless.jobrun import Chunk, JobContext, JobOutcome, first_day

DEFAULT_CHUNK = 500


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

_NOT_ALLOCATED = (
    "NOT EXISTS (SELECT 1 FROM monthly_allocations m WHERE m.account_id = a.id AND m.month = %(month)s)"
)


def _granted(balance: str) -> str:
    return f"greatest(0, least(r.monthly_allocation_micro, r.balance_cap_micro - {balance}))"


def open_accounts_sql(subjects: Subjects) -> str:
    col = subjects.account_column
    return (
        f"INSERT INTO credit_accounts ({col}) "
        f"SELECT s.id FROM {subjects.source} WHERE {subjects.active} "
        f"AND NOT EXISTS (SELECT 1 FROM credit_accounts x WHERE x.{col} = s.id) "
        f"ORDER BY s.id ON CONFLICT ({col}) DO NOTHING RETURNING id"
    )


def lock_due_sql(subjects: Subjects, *, skip_locked: bool) -> str:
    """Lock the next accounts due this month, ascending id (the ledger's lock order)."""
    return (
        f"SELECT a.id FROM {subjects.source} "
        f"JOIN credit_accounts a ON a.{subjects.account_column} = s.id "
        f"WHERE {subjects.active} AND a.id > %(after)s AND {_NOT_ALLOCATED} "
        f"ORDER BY a.id LIMIT %(limit)s FOR UPDATE OF a{' SKIP LOCKED' if skip_locked else ''}"
    )


def grant_sql(subjects: Subjects) -> str:
    """The ledger entries and allocation rows of the locked accounts, in one statement.

    It runs after `lock_due_sql` in the same transaction, in a new snapshot: the
    NOT EXISTS re-check sees allocations committed while we waited for a lock, and
    the balance read for the cap is the locked row's. The ledger's AFTER STATEMENT
    trigger moves the balances; an existing key is skipped (ON CONFLICT), and then
    no allocation row is written for it either (the join on RETURNING)."""
    return f"""
        WITH due AS (
            SELECT a.id AS account_id, {subjects.rule} AS rule,
                   r.monthly_allocation_micro AS requested, {_granted("a.balance_micro")} AS granted
            FROM {subjects.source}
            JOIN credit_accounts a ON a.{subjects.account_column} = s.id
            WHERE a.id = ANY(%(ids)s) AND {subjects.active} AND {_NOT_ALLOCATED}
        ), entries AS (
            INSERT INTO credit_ledger (account_id, kind, amount_micro, idempotency_key, description)
            SELECT account_id, 'allocation', granted,
                   'allocation:{subjects.kind}:' || account_id || ':' || %(label)s,
                   'monthly allocation ' || %(label)s || ' (' || rule || ')'
            FROM due ORDER BY account_id
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING id, account_id, amount_micro
        )
        INSERT INTO monthly_allocations (account_id, month, tier_or_plan, requested_micro, granted_micro,
                                         ledger_id)
        SELECT e.account_id, %(month)s, d.rule, d.requested, e.amount_micro, e.id
        FROM entries e JOIN due d USING (account_id)
        RETURNING requested_micro, granted_micro
    """


def due_figures_sql(subjects: Subjects) -> str:
    """Subjects due and not yet allocated this month (with or without an account):
    how many, what they would be granted now, how many would be capped, how many
    have no account yet. Read-only: the remaining count and the dry run."""
    return (
        f"SELECT count(*), coalesce(sum({_granted('coalesce(a.balance_micro, 0)')}), 0), "
        f"count(*) FILTER (WHERE {_granted('coalesce(a.balance_micro, 0)')} < r.monthly_allocation_micro), "
        f"count(*) FILTER (WHERE a.id IS NULL) "
        f"FROM {subjects.source} LEFT JOIN credit_accounts a ON a.{subjects.account_column} = s.id "
        f"WHERE {subjects.active} AND (a.id IS NULL OR {_NOT_ALLOCATED})"
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


def allocate_month(ctx: JobContext, subjects: Subjects, *, chunk_size: int = DEFAULT_CHUNK) -> JobOutcome:
    """The work of one allocation run (see the module docstring).

    Counts (committed only): `accounts_opened`, `allocations` (rows written),
    `granted_micro` (their sum), `capped` (granted below the requested amount).
    `remaining` = subjects still due when the run ended (0 unless it ran out of time).
    """
    at = ctx.scheduled_time
    month = first_day(ctx.period)
    params = {"at": at, "month": month, "label": ctx.period.label}
    details: dict[str, Any] = {
        "allocation_time": at.isoformat().replace("+00:00", "Z"),
        "kind": subjects.kind,
    }

    if ctx.dry_run:
        figures = due_figures(ctx.conn, subjects, at, month)
        details["would"] = figures.as_dict()
        return JobOutcome(remaining=figures.subjects, details=details)

    for name in ("allocations", "granted_micro", "capped"):
        ctx.add(name, 0)  # published even when nothing was due: a flat line, not a gap
    with ctx.conn.transaction():
        opened = ctx.conn.execute(open_accounts_sql(subjects), params).fetchall()
    ctx.add("accounts_opened", len(opened))

    def chunk(conn: Any, cursor: Any, limit: int, skip_locked: bool) -> Chunk:
        locked = conn.execute(
            lock_due_sql(subjects, skip_locked=skip_locked), {**params, "after": cursor or 0, "limit": limit}
        ).fetchall()
        if not locked:
            return Chunk(0, cursor)
        ids = [int(row[0]) for row in locked]
        written = conn.execute(grant_sql(subjects), {**params, "ids": ids}).fetchall()
        return Chunk(
            len(ids),
            ids[-1],
            {
                "allocations": len(written),
                "granted_micro": sum(int(granted) for _, granted in written),
                "capped": sum(1 for requested, granted in written if granted < requested),
            },
        )

    report = sweep(ctx, chunk, limit=chunk_size)
    remaining = due_figures(ctx.conn, subjects, at, month).subjects
    details["chunks"] = report.chunks
    details["stopped_for_deadline"] = not report.finished
    return JobOutcome(remaining=remaining, details=details)
