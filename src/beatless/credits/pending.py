"""pending_transaction_processor's core: stale pending transactions are settled once.

A transaction of the old credit system that is still `pending` when it is
`max_age` old (default 60 minutes; `created_at <= as_of - max_age`, so exactly
`max_age` old counts as stale) is settled as its kind says
(`transaction_kinds.when_stale`):

- `finalize` (the service was delivered: AI usage, storage overage): one ledger
  entry of kind `transaction`, idempotency key `transaction:<id>`, signed amount
  as stored, and the transaction moves to `finalized` with that entry's id — in
  the same transaction. No balance check: the credits were spent already, so a
  finalized debit may take the balance below 0.
- `revert` (never confirmed: a purchase or refund): the transaction moves to
  `reverted`; the balance does not move.

A transaction whose amount's sign disagrees with its kind's direction (a debit
kind with a positive amount, ...) is left pending and named in an
`InconsistentTransactionsError` error raised after the rest is done: guessing which
side is wrong could move money the wrong way.

`as_of` is the run's scheduled time, clamped to the database clock by the job
runtime (a future scheduled time in a console event cannot settle a
transaction early).

Each chunk is one statement in one transaction: claim up to CHUNK_SIZE stale
pending transactions in (created_at, id) order after the previous chunk's last
key with FOR UPDATE SKIP LOCKED (the partial index `credit_transactions_pending`),
post the ledger entries (ON CONFLICT on the key), move the statuses with the
guard `status = 'pending'`. So a concurrent run skips what another holds, a
replay finds nothing, a killed run loses only its open chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from beatless.errors import BeatlessError
from beatless.jobs.batch import KEYSET_START, Chunk, run_chunks
from beatless.jobs.runtime import JobContext, JobOutcome
from beatless.settings import Env, env_int
from beatless.timestamps import iso_z

CHUNK_SIZE = 5_000
DEFAULT_MAX_AGE_MINUTES = 60


class InconsistentTransactionsError(BeatlessError):
    """Stale pending transactions whose amount's sign contradicts their kind."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids
        shown = ", ".join(str(i) for i in ids[:20]) + (" ..." if len(ids) > 20 else "")
        super().__init__(
            f"{len(ids)} stale pending transaction(s) left pending: the sign of amount_micro "
            f"contradicts transaction_kinds.direction (ids {shown}); fix them by hand"
        )


@dataclass(frozen=True)
class PendingSettings:
    max_age: timedelta

    @classmethod
    def from_env(cls, env: Env) -> PendingSettings:
        """`PENDING_TRANSACTION_MAX_AGE_MINUTES` (default 60): how long a transaction may
        stay pending before the job settles it."""
        minutes = env_int(
            env, "PENDING_TRANSACTION_MAX_AGE_MINUTES", DEFAULT_MAX_AGE_MINUTES, minimum=1, maximum=43_200
        )
        return cls(timedelta(minutes=minutes))


_PICK = """
    SELECT t.id, t.account_id, t.kind, t.amount_micro, t.created_at, k.when_stale,
           (t.amount_micro > 0) = (k.direction > 0) AS consistent
    FROM credit_transactions t JOIN transaction_kinds k ON k.kind = t.kind
    WHERE t.status = 'pending' AND t.created_at <= %(stale_before)s
      AND (t.created_at, t.id) > (%(after_at)s, %(after_id)s)
"""

# A chunk takes three statements in one transaction, in the lock order of
# migration 0002: the stale transactions (SKIP LOCKED, so concurrent runs share
# the work), then their accounts in ascending id, then the effect. Locking the
# accounts first matters: the ledger insert's foreign-key check takes a share
# lock that its balance trigger then upgrades, and two runs upgrading on the
# same two accounts in different orders deadlock.
_CLAIM_SQL = """
SELECT t.id, t.account_id, t.created_at
FROM credit_transactions t
WHERE t.status = 'pending' AND t.created_at <= %(stale_before)s
  AND (t.created_at, t.id) > (%(after_at)s, %(after_id)s)
ORDER BY t.created_at, t.id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

_LOCK_ACCOUNTS_SQL = "SELECT id FROM credit_accounts WHERE id = ANY(%(accounts)s) ORDER BY id FOR UPDATE"

_CHUNK_SQL = """
WITH picked AS (
    SELECT t.id, t.account_id, t.kind, t.amount_micro, t.created_at, k.when_stale,
           (t.amount_micro > 0) = (k.direction > 0) AS consistent
    FROM credit_transactions t JOIN transaction_kinds k ON k.kind = t.kind
    WHERE t.id = ANY(%(ids)s) AND t.status = 'pending'
), posted AS (
    INSERT INTO credit_ledger (account_id, kind, amount_micro, idempotency_key, description)
    SELECT account_id, 'transaction', amount_micro, 'transaction:' || id,
           'pending ' || kind || ' transaction ' || id || ' finalized after going stale'
    FROM picked WHERE when_stale = 'finalize' AND consistent
    ORDER BY account_id, id
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id, idempotency_key
), finalized AS (
    UPDATE credit_transactions t
    SET status = 'finalized', settled_at = now(), ledger_id = posted.id
    FROM posted JOIN picked ON posted.idempotency_key = 'transaction:' || picked.id
    WHERE t.id = picked.id AND t.status = 'pending'
    RETURNING t.amount_micro
), reverted AS (
    UPDATE credit_transactions t
    SET status = 'reverted', settled_at = now()
    FROM picked
    WHERE t.id = picked.id AND picked.when_stale = 'revert' AND picked.consistent
      AND t.status = 'pending'
    RETURNING t.amount_micro
)
SELECT (SELECT count(*) FROM picked),
       (SELECT count(*) FROM picked WHERE when_stale = 'finalize' AND consistent),
       (SELECT count(*) FROM finalized),
       (SELECT coalesce(sum(amount_micro), 0) FROM finalized),
       (SELECT count(*) FROM reverted),
       (SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM picked WHERE NOT consistent)
"""

_LEFT_SQL = f"SELECT count(*) FROM ({_PICK}) AS stale"

_DRY_RUN_SQL = f"""
SELECT
    count(*) FILTER (WHERE when_stale = 'finalize' AND consistent),
    coalesce(sum(amount_micro) FILTER (WHERE when_stale = 'finalize' AND consistent), 0),
    count(*) FILTER (WHERE when_stale = 'revert' AND consistent),
    count(*) FILTER (WHERE NOT consistent)
FROM ({_PICK}) AS stale
"""


def settle_stale_transactions(
    ctx: JobContext, settings: PendingSettings, *, chunk_size: int = CHUNK_SIZE
) -> JobOutcome:
    """Finalize or revert every transaction pending since `as_of - max_age` or earlier.

    Counts `finalized`, `finalized_micro` (signed sum posted to the ledger) and
    `reverted`. `remaining`: stale transactions a run short of time left. Raises
    `InconsistentTransactionsError` after the rest is settled if any were left pending
    for a sign that contradicts their kind. Dry run: `would_finalize`,
    `would_finalize_micro`, `would_revert`, `inconsistent`; `remaining` = would
    finalize + would revert; nothing changed.
    """
    stale_before = ctx.as_of - settings.max_age
    details: dict[str, Any] = {"stale_before": iso_z(stale_before)}
    base = {"stale_before": stale_before}
    if ctx.dry_run:
        params = {**base, "after_at": KEYSET_START[0], "after_id": KEYSET_START[1]}
        finalize, finalize_micro, revert, bad = ctx.conn.execute(_DRY_RUN_SQL, params).fetchone()
        details.update(
            would_finalize=finalize,
            would_finalize_micro=int(finalize_micro),
            would_revert=revert,
            inconsistent=bad,
        )
        # Like every dry run: "remaining" is what a real run would settle now.
        return JobOutcome(remaining=finalize + revert, details=details)

    inconsistent: list[int] = []

    def chunk(conn: Any, cursor: Any, limit: int) -> Chunk:
        after_at, after_id = cursor or KEYSET_START
        params = {**base, "after_at": after_at, "after_id": after_id, "limit": limit}
        claimed = conn.execute(_CLAIM_SQL, params).fetchall()
        if not claimed:
            return Chunk(rows=0, cursor=cursor, counts={"finalized": 0, "finalized_micro": 0, "reverted": 0})
        conn.execute(_LOCK_ACCOUNTS_SQL, {"accounts": sorted({row[1] for row in claimed})})
        picked, to_finalize, finalized, amount, reverted, bad = conn.execute(
            _CHUNK_SQL, {"ids": [row[0] for row in claimed]}
        ).fetchone()
        last_id, _, last_at = claimed[-1]
        if finalized != to_finalize:
            # The key 'transaction:<id>' exists without its transaction being finalized:
            # something outside this job posted it. Roll the chunk back and say so.
            raise RuntimeError(
                f"{to_finalize - finalized} pending transaction(s) found their ledger key "
                "'transaction:<id>' already used; nothing of this chunk was applied"
            )
        inconsistent.extend(bad)
        return Chunk(
            rows=picked,
            cursor=(last_at, last_id),
            counts={"finalized": finalized, "finalized_micro": int(amount), "reverted": reverted},
        )

    for name in ("finalized", "finalized_micro", "reverted"):
        ctx.add(name, 0)
    report = run_chunks(ctx, chunk, limit=chunk_size)
    remaining = 0
    if not report.finished:
        after_at, after_id = report.cursor or KEYSET_START
        params = {**base, "after_at": after_at, "after_id": after_id}
        remaining = ctx.conn.execute(_LEFT_SQL, params).fetchone()[0]
    details["chunks"] = report.chunks
    if inconsistent:
        ctx.add("inconsistent", len(inconsistent))
        raise InconsistentTransactionsError(sorted(inconsistent))
    return JobOutcome(remaining=remaining, details=details)
