"""Monthly credit allocations: one per account and month, never two.

Two kinds of subject get credits on a monthly schedule:

- `SHARED`: subscriptions to a shared repository (`shared_credit_allocation`),
  the plan's monthly allocation, up to the plan's balance cap;
- `GRAPHS`: graphs (`graph_credit_allocation`), by tier, up to the tier's
  balance cap.

The rules, all derived from the run's scheduled time T (never the clock):

- the business month is the month of T (`beatless.jobs.periods.month_of`);
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

from typing import Any

from beatless.credits.due import NOT_ALLOCATED, Subjects, due_figures, granted_sql
from beatless.jobs.batch import Chunk, sweep
from beatless.jobs.periods import first_day
from beatless.jobs.runtime import JobContext, JobOutcome
from beatless.timestamps import iso_z

DEFAULT_CHUNK = 500


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
        f"WHERE {subjects.active} AND a.id > %(after)s AND {NOT_ALLOCATED} "
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
                   r.monthly_allocation_micro AS requested, {granted_sql("a.balance_micro")} AS granted
            FROM {subjects.source}
            JOIN credit_accounts a ON a.{subjects.account_column} = s.id
            WHERE a.id = ANY(%(ids)s) AND {subjects.active} AND {NOT_ALLOCATED}
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


def allocate_month(ctx: JobContext, subjects: Subjects, *, chunk_size: int = DEFAULT_CHUNK) -> JobOutcome:
    """The work of one allocation run (see the module docstring).

    Counts (committed only): `accounts_opened`, `allocations` (rows written),
    `granted_micro` (their sum), `capped` (granted below the requested amount).
    `remaining` = subjects still due when the run ended (0 unless it ran out of time).
    """
    at = ctx.as_of
    month = first_day(ctx.period)
    params = {"at": at, "month": month, "label": ctx.period.label}
    details: dict[str, Any] = {
        "allocation_time": iso_z(at),
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
