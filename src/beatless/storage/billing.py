"""storage_billing's core: one storage charge per graph and UTC day.

The run at 02:00 on day D bills day D-1 (`previous_day` of the scheduled time):
the snapshots of hours D-1 00:00 ... D-1 23:00 (the collector's :05 run records
the hour it runs in, so all 24 exist by 02:00 on D).

The charge of a graph-day (`daily_charge`, exact integer arithmetic):

    n            = snapshots present that day (1..24; hours the collector missed
                   are left out: the average is over the hours present)
    byte_hours   = sum of their total_bytes
    average      = byte_hours / n
    above        = average - included_storage_bytes of the tier   (if > 0)
    amount_micro = floor(above * storage_micro_per_gib_day / 2^30)

computed as one integer division of exact integers, so the amount is the exact
value rounded DOWN to a whole micro-credit (never more than the storage used;
at most 1 micro-credit = 10^-6 credit less per graph-day). `average_bytes`
stored on the charge is floor(byte_hours / n).

The tier: the one in force at the day's last instant (`graph_tier_at(graph,
D 23:59:59.999999)`): a graph upgraded (or downgraded) during the day is billed
the whole day at its new tier's included storage and rate; days before the
change use the old tier. One tier per day keeps a charge reproducible from its
own row (tier, included_bytes, average_bytes, snapshots).

What is written, in ONE transaction per chunk of graphs:
- amount > 0: a ledger entry (kind `storage_charge`, key
  `storage:<graph_id>:<day>`, -amount; no balance check: storage is billed even
  when it takes the balance below 0) and the `storage_charges` row with its id;
- amount = 0 (nothing above the included storage, no usage at all): the
  `storage_charges` row only (ledger_id NULL) — it records that the day was
  billed;
- no snapshot that day: nothing (there is nothing to average; the graph did not
  exist or the collector never ran for it).
A graph without a credit account gets one opened (empty) in the same transaction.

Exactly once per graph-day: the primary key (graph_id, day) of
`storage_charges` and the UNIQUE ledger key, both written in the same
transaction. Chunks claim graphs in id order with FOR NO KEY UPDATE SKIP LOCKED
(strong enough to keep two runs apart, weak enough not to block the collector's
foreign-key checks), re-check "not billed yet" after the lock, and commit; a
replay finds every graph-day billed, a killed run loses only its open chunk, a
run short of time stops between chunks and reports what it left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from beatless.errors import BeatlessError
from beatless.jobs.batch import Chunk, run_chunks
from beatless.jobs.runtime import JobContext, JobOutcome

GIB = 2**30
CHUNK_SIZE = 500


class UntieredGraphsError(BeatlessError):
    """Graphs with snapshots on a day before their first tier: they cannot be billed."""

    def __init__(self, day: date, graph_ids: Sequence[str]) -> None:
        self.day = day
        self.graph_ids = list(graph_ids)
        shown = ", ".join(self.graph_ids[:20]) + (" ..." if len(self.graph_ids) > 20 else "")
        super().__init__(
            f"{len(self.graph_ids)} graph(s) have storage snapshots on {day.isoformat()} but no tier "
            f"at the end of that day, so they were not billed: {shown}"
        )


@dataclass(frozen=True)
class DailyCharge:
    snapshots: int
    average_bytes: int  # floor(byte_hours / snapshots)
    included_bytes: int
    amount_micro: int  # floor of the exact amount, >= 0


def daily_charge(byte_hours: int, snapshots: int, included_bytes: int, micro_per_gib_day: int) -> DailyCharge:
    """The charge of one graph-day (see the module docstring); exact integers only."""
    for name, value in (
        ("byte_hours", byte_hours),
        ("snapshots", snapshots),
        ("included_bytes", included_bytes),
        ("micro_per_gib_day", micro_per_gib_day),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if not 1 <= snapshots <= 24:
        raise ValueError(f"snapshots must be 1..24, got {snapshots}")
    # above * rate / GiB with above = byte_hours / n - included, as one fraction:
    # (byte_hours - n * included) * rate / (n * GiB), floored.
    above_byte_hours = byte_hours - snapshots * included_bytes
    amount = above_byte_hours * micro_per_gib_day // (snapshots * GIB) if above_byte_hours > 0 else 0
    return DailyCharge(snapshots, byte_hours // snapshots, included_bytes, amount)


_CLAIM_SQL = """
SELECT g.id FROM graphs g
WHERE g.id > %(after)s
  AND EXISTS (SELECT 1 FROM storage_usage_snapshots s
              WHERE s.graph_id = g.id AND s.hour >= %(start)s AND s.hour < %(end)s)
  AND NOT EXISTS (SELECT 1 FROM storage_charges c WHERE c.graph_id = g.id AND c.day = %(day)s)
ORDER BY g.id
LIMIT %(limit)s
"""

# After the lock (a new statement, so a fresh snapshot): graphs another run billed
# between our claim's snapshot and our lock drop out here.
_USAGE_SQL = """
SELECT g.id, u.snapshots, u.byte_hours, t.name, t.included_storage_bytes,
       t.storage_micro_per_gib_day, a.id
FROM unnest(%(ids)s::text[]) AS g(id)
CROSS JOIN LATERAL (
    SELECT count(*) AS snapshots, coalesce(sum(total_bytes), 0) AS byte_hours
    FROM storage_usage_snapshots s
    WHERE s.graph_id = g.id AND s.hour >= %(start)s AND s.hour < %(end)s
) u
LEFT JOIN tiers t ON t.name = graph_tier_at(g.id, %(last_instant)s)
LEFT JOIN credit_accounts a ON a.graph_id = g.id
WHERE NOT EXISTS (SELECT 1 FROM storage_charges c WHERE c.graph_id = g.id AND c.day = %(day)s)
ORDER BY g.id
"""

_OPEN_ACCOUNTS_SQL = """
INSERT INTO credit_accounts (graph_id) SELECT unnest(%(ids)s::text[]) ORDER BY 1
ON CONFLICT (graph_id) DO NOTHING
RETURNING graph_id, id
"""

_LEDGER_SQL = """
INSERT INTO credit_ledger (account_id, kind, amount_micro, idempotency_key, description)
SELECT account_id, 'storage_charge', -amount, key, description
FROM unnest(%(accounts)s::bigint[], %(amounts)s::bigint[], %(keys)s::text[], %(descriptions)s::text[])
     AS u(account_id, amount, key, description)
ORDER BY account_id
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key, id
"""

_CHARGES_SQL = """
INSERT INTO storage_charges
    (graph_id, day, account_id, tier, snapshots, average_bytes, included_bytes, amount_micro, ledger_id)
SELECT graph_id, %(day)s, account_id, tier, snapshots, average_bytes, included_bytes, amount, ledger_id
FROM unnest(%(ids)s::text[], %(accounts)s::bigint[], %(tiers)s::text[], %(snapshots)s::int[],
            %(averages)s::bigint[], %(included)s::bigint[], %(amounts)s::bigint[], %(ledger_ids)s::bigint[])
     AS u(graph_id, account_id, tier, snapshots, average_bytes, included_bytes, amount, ledger_id)
ON CONFLICT (graph_id, day) DO NOTHING
RETURNING graph_id
"""

_LEFT_SQL = """
SELECT count(*) FROM graphs g
WHERE g.id > %(after)s
  AND EXISTS (SELECT 1 FROM storage_usage_snapshots s
              WHERE s.graph_id = g.id AND s.hour >= %(start)s AND s.hour < %(end)s)
  AND NOT EXISTS (SELECT 1 FROM storage_charges c WHERE c.graph_id = g.id AND c.day = %(day)s)
"""


def ledger_key(graph_id: str, day: date) -> str:
    return f"storage:{graph_id}:{day.isoformat()}"


@dataclass(frozen=True)
class _Bill:
    graph_id: str
    account_id: int | None
    tier: str
    charge: DailyCharge


def bill_storage(ctx: JobContext, *, chunk_size: int = CHUNK_SIZE) -> JobOutcome:
    """Charge every graph with snapshots on `ctx.period` (a UTC day) and no charge yet.

    Counts `charged` (graph-days with a ledger entry), `charged_micro` (their
    sum), `zero_charges` (graph-days recorded at 0) and `accounts_opened`.
    `remaining`: graph-days a run short of time left. Raises `UntieredGraphsError`,
    after billing the others, for graphs without a tier on that day. Dry run:
    `would_charge`, `would_charge_micro`, `would_record_zero` (`remaining` = the
    rows a real run would write), nothing written.
    """
    day = ctx.period
    billed_day = day.start.date()
    base: dict[str, Any] = {
        "start": day.start,
        "end": day.end,
        "day": billed_day,
        "last_instant": day.end - timedelta(microseconds=1),
    }
    untiered: list[str] = []
    dry = {"would_charge": 0, "would_charge_micro": 0, "would_record_zero": 0}

    def chunk(conn: Any, cursor: Any, limit: int) -> Chunk:
        lock = "" if ctx.dry_run else " FOR NO KEY UPDATE SKIP LOCKED"
        claimed = [
            row[0] for row in conn.execute(_CLAIM_SQL + lock, {**base, "after": cursor or "", "limit": limit})
        ]
        if not claimed:
            return Chunk(rows=0, cursor=cursor)
        bills: list[_Bill] = []
        for graph_id, n, byte_hours, tier, included, rate, account_id in conn.execute(
            _USAGE_SQL, {**base, "ids": claimed}
        ):
            if tier is None:
                untiered.append(graph_id)
                continue
            bills.append(_Bill(graph_id, account_id, tier, daily_charge(int(byte_hours), n, included, rate)))
        if ctx.dry_run:
            for bill in bills:
                positive = bill.charge.amount_micro > 0
                dry["would_charge"] += positive
                dry["would_charge_micro"] += bill.charge.amount_micro
                dry["would_record_zero"] += not positive
            return Chunk(rows=len(claimed), cursor=claimed[-1])
        return Chunk(rows=len(claimed), cursor=claimed[-1], counts=_write(conn, billed_day, bills))

    if not ctx.dry_run:
        for name in ("charged", "charged_micro", "zero_charges", "accounts_opened"):
            ctx.add(name, 0)
    report = run_chunks(ctx, chunk, limit=chunk_size)
    remaining = 0
    if not report.finished:
        remaining = ctx.conn.execute(_LEFT_SQL, {**base, "after": report.cursor or ""}).fetchone()[0]
    details: dict[str, Any] = {"day": billed_day.isoformat(), "chunks": report.chunks}
    if ctx.dry_run:
        details.update(dry)
        # Like every dry run: "remaining" is what a real run would write now.
        remaining += dry["would_charge"] + dry["would_record_zero"]
    if untiered:
        raise UntieredGraphsError(billed_day, sorted(untiered))
    return JobOutcome(remaining=remaining, details=details)


def _write(conn: Any, day: date, bills: list[_Bill]) -> dict[str, int]:
    """The chunk's effects (inside its transaction): accounts, ledger entries, charges."""
    missing = [b.graph_id for b in bills if b.account_id is None]
    opened = dict(conn.execute(_OPEN_ACCOUNTS_SQL, {"ids": missing}).fetchall()) if missing else {}
    if len(opened) != len(missing):
        raise RuntimeError("a graph's credit account appeared while its storage was being billed; retry")
    bills = [b if b.account_id is not None else _with_account(b, opened[b.graph_id]) for b in bills]
    positive = [b for b in bills if b.charge.amount_micro > 0]
    ledger_ids: dict[str, int] = {}
    if positive:
        ledger_ids = dict(
            conn.execute(
                _LEDGER_SQL,
                {
                    "accounts": [b.account_id for b in positive],
                    "amounts": [b.charge.amount_micro for b in positive],
                    "keys": [ledger_key(b.graph_id, day) for b in positive],
                    "descriptions": [_description(b, day) for b in positive],
                },
            ).fetchall()
        )
    if len(ledger_ids) != len(positive):
        # The graph-day had no charge row (re-checked under the lock) but its ledger
        # key exists: posted by something else. Roll the chunk back and say so.
        raise RuntimeError(
            f"{len(positive) - len(ledger_ids)} storage ledger key(s) of {day} already exist "
            "without their storage_charges row; nothing of this chunk was applied"
        )
    written = conn.execute(
        _CHARGES_SQL,
        {
            "day": day,
            "ids": [b.graph_id for b in bills],
            "accounts": [b.account_id for b in bills],
            "tiers": [b.tier for b in bills],
            "snapshots": [b.charge.snapshots for b in bills],
            "averages": [b.charge.average_bytes for b in bills],
            "included": [b.charge.included_bytes for b in bills],
            "amounts": [b.charge.amount_micro for b in bills],
            "ledger_ids": [ledger_ids.get(ledger_key(b.graph_id, day)) for b in bills],
        },
    ).fetchall()
    if len(written) != len(bills):
        raise RuntimeError(f"storage charges of {day} appeared during billing; nothing of this chunk applied")
    return {
        "charged": len(positive),
        "charged_micro": sum(b.charge.amount_micro for b in positive),
        "zero_charges": len(bills) - len(positive),
        "accounts_opened": len(opened),
    }


def _with_account(bill: _Bill, account_id: int) -> _Bill:
    return _Bill(bill.graph_id, account_id, bill.tier, bill.charge)


def _description(bill: _Bill, day: date) -> str:
    c = bill.charge
    return (
        f"storage {day.isoformat()}: average {c.average_bytes} B over {c.snapshots} snapshot(s), "
        f"{c.included_bytes} B included ({bill.tier})"
    )
