"""Monthly usage summaries: one row per graph and month, for the month before the run.

The month summarized is the one before the month of the scheduled time (the
job runs on the 2nd; `beatless.jobs.periods.previous_month`). A graph is summarized
when it existed during that month: a tier took effect before the month's end
and it was not deleted before the month's start. Graphs with no usage get a
row of zeros (the report says "nothing", not "unknown").

The figures, each from its own business period (never from when jobs ran):

- `allocated_micro`: granted by the month's `monthly_allocations` row;
- `consumed_micro`: credits spent through the ledger in the month
  (kinds consumption and hold_commit; entries by their `created_at`);
- `storage_charged_micro`: the `storage_charges` of the month's days;
- `average_storage_bytes`: the mean `total_bytes` of the month's hourly
  snapshots (0 without any). `details` adds the snapshot count, the hours of
  the month (672, 696, 720 or 744), GiB-days (byte-hours / 24 / 2^30 as decimal
  text, 6 places) and the ledger sums of the month by kind;
- `tier_at_end`: the tier in force at the end of the month.

Exactly once: PRIMARY KEY (graph_id, month) and INSERT ... ON CONFLICT DO
NOTHING. The first summary written stays; a replay adds nothing. Work is
shared between concurrent runs with `FOR NO KEY UPDATE SKIP LOCKED` on the
graph rows (which does not block the foreign-key checks of other writers).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from beatless.jobs.batch import Chunk, sweep
from beatless.jobs.periods import first_day
from beatless.jobs.runtime import JobContext, JobOutcome

DEFAULT_CHUNK = 200

# Existed during [start, end): a tier before the end, not deleted before the start.
_IN_MONTH = (
    "EXISTS (SELECT 1 FROM graph_tier_history h WHERE h.graph_id = g.id AND h.effective_from < %(end)s) "
    "AND (g.deleted_at IS NULL OR g.deleted_at >= %(start)s)"
)
_NOT_SUMMARIZED = (
    "NOT EXISTS (SELECT 1 FROM monthly_usage_summaries u WHERE u.graph_id = g.id AND u.month = %(month)s)"
)


def lock_due_sql(*, skip_locked: bool) -> str:
    return (
        f"SELECT g.id FROM graphs g WHERE g.id > %(after)s AND {_IN_MONTH} AND {_NOT_SUMMARIZED} "
        f"ORDER BY g.id LIMIT %(limit)s FOR NO KEY UPDATE OF g{' SKIP LOCKED' if skip_locked else ''}"
    )


_SUMMARIZE = f"""
    WITH due AS (
        SELECT g.id AS graph_id, a.id AS account_id
        FROM graphs g LEFT JOIN credit_accounts a ON a.graph_id = g.id
        WHERE g.id = ANY(%(ids)s) AND {_IN_MONTH} AND {_NOT_SUMMARIZED}
    ), ledger AS (
        SELECT d.graph_id, l.kind, sum(l.amount_micro) AS amount, count(*) AS entries
        FROM due d JOIN credit_ledger l ON l.account_id = d.account_id
        WHERE l.created_at >= %(start)s AND l.created_at < %(end)s
        GROUP BY d.graph_id, l.kind
    ), storage AS (
        SELECT d.graph_id, count(*) AS snapshots, sum(s.total_bytes) AS byte_hours
        FROM due d JOIN storage_usage_snapshots s ON s.graph_id = d.graph_id
        WHERE s.hour >= %(start)s AND s.hour < %(end)s
        GROUP BY d.graph_id
    ), charges AS (
        SELECT d.graph_id, count(*) AS days, sum(c.amount_micro) AS amount
        FROM due d JOIN storage_charges c ON c.graph_id = d.graph_id
        WHERE c.day >= %(first_day)s AND c.day < %(next_day)s
        GROUP BY d.graph_id
    )
    INSERT INTO monthly_usage_summaries (graph_id, month, tier_at_end, allocated_micro, consumed_micro,
                                         storage_charged_micro, average_storage_bytes, details)
    SELECT d.graph_id, %(month)s,
        (SELECT h.tier FROM graph_tier_history h WHERE h.graph_id = d.graph_id AND h.effective_from < %(end)s
         ORDER BY h.effective_from DESC LIMIT 1),
        coalesce((SELECT m.granted_micro FROM monthly_allocations m
                  WHERE m.account_id = d.account_id AND m.month = %(month)s), 0),
        coalesce((SELECT -sum(l.amount) FROM ledger l
                  WHERE l.graph_id = d.graph_id AND l.kind IN ('consumption', 'hold_commit')), 0),
        coalesce(c.amount, 0),
        coalesce(div(s.byte_hours, s.snapshots), 0),
        jsonb_build_object(
            'hours_in_month', %(hours)s::int,
            'snapshots', coalesce(s.snapshots, 0),
            'byte_hours', coalesce(s.byte_hours, 0),
            'gib_days', round(coalesce(s.byte_hours, 0) / 24.0 / 1073741824, 6)::text,
            'storage_charge_days', coalesce(c.days, 0),
            'has_account', d.account_id IS NOT NULL,
            'ledger_micro', coalesce((SELECT jsonb_object_agg(l.kind, l.amount) FROM ledger l
                                      WHERE l.graph_id = d.graph_id), '{{}}'::jsonb),
            'ledger_entries', coalesce((SELECT sum(l.entries) FROM ledger l WHERE l.graph_id = d.graph_id), 0)
        )
    FROM due d
    LEFT JOIN storage s ON s.graph_id = d.graph_id
    LEFT JOIN charges c ON c.graph_id = d.graph_id
    ORDER BY d.graph_id
    ON CONFLICT (graph_id, month) DO NOTHING
    RETURNING graph_id
"""

_DUE_COUNT = f"SELECT count(*) FROM graphs g WHERE {_IN_MONTH} AND {_NOT_SUMMARIZED}"


def summarize_month(ctx: JobContext, *, chunk_size: int = DEFAULT_CHUNK) -> JobOutcome:
    """The work of one summary run; `ctx.period` is the month summarized.

    Counts (committed only): `summaries` (rows written). `remaining` = graphs of
    the month still without a summary when the run ended."""
    period = ctx.period
    month = first_day(period)
    next_day: date = period.end.date()
    params: dict[str, Any] = {
        "start": period.start,
        "end": period.end,
        "month": month,
        "first_day": month,
        "next_day": next_day,
        "hours": int((period.end - period.start).total_seconds() // 3600),
    }
    details: dict[str, Any] = {"month": period.label, "hours_in_month": params["hours"]}
    if ctx.dry_run:
        due = int(ctx.conn.execute(_DUE_COUNT, params).fetchone()[0])
        details["would"] = {"summaries": due}
        return JobOutcome(remaining=due, details=details)

    ctx.add("summaries", 0)

    def chunk(conn: Any, cursor: Any, limit: int, skip_locked: bool) -> Chunk:
        locked = conn.execute(
            lock_due_sql(skip_locked=skip_locked), {**params, "after": cursor or "", "limit": limit}
        ).fetchall()
        if not locked:
            return Chunk(0, cursor)
        ids = [row[0] for row in locked]
        written = conn.execute(_SUMMARIZE, {**params, "ids": ids}).fetchall()
        return Chunk(len(ids), ids[-1], {"summaries": len(written)})

    report = sweep(ctx, chunk, limit=chunk_size)
    remaining = int(ctx.conn.execute(_DUE_COUNT, params).fetchone()[0])
    details["chunks"] = report.chunks
    details["stopped_for_deadline"] = not report.finished
    return JobOutcome(remaining=remaining, details=details)
