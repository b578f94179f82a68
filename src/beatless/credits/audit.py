"""The one reconciliation of the credit tables (credit_health_check, tests, benchmarks).

The invariants, kept by the schema's triggers: every account's balance equals
the sum of its ledger entries, and `credit_reservations_held` (whose sum per
account is the held amount) has exactly the holds in status `held` — the same
holds, amounts and expiries. `reconcile` reads the figures of a keyset chunk
of accounts in ONE statement (one snapshot); `mismatches` walks every account.
"""

from __future__ import annotations

from dataclasses import dataclass

from beatless.db.arguments import Conn

DEFAULT_CHUNK = 5_000


@dataclass(frozen=True)
class AccountFigures:
    """One account's stored figures beside the rows they are made of."""

    account_id: int
    balance_micro: int  # stored
    ledger_micro: int  # the sum of its ledger entries
    held_micro: int  # the sum of its credit_reservations_held rows (the computed held amount)
    held_rows: int
    wrong_held_rows: int  # held rows without their hold, or differing in status, account, amount, expiry
    holds_micro: int  # the sum of its holds in status 'held'
    holds: int

    @property
    def balance_matches(self) -> bool:
        return self.balance_micro == self.ledger_micro

    @property
    def held_matches(self) -> bool:
        return (
            self.held_micro == self.holds_micro and self.held_rows == self.holds and self.wrong_held_rows == 0
        )


@dataclass(frozen=True)
class Mismatch:
    account_id: int
    what: str  # "balance", or "held": the holds in status 'held' vs credit_reservations_held
    stored_micro: int
    expected_micro: int


_RECONCILE = """
    SELECT a.id, a.balance_micro,
           (SELECT coalesce(sum(l.amount_micro), 0) FROM credit_ledger l WHERE l.account_id = a.id),
           t.total, t.n, t.wrong, s.total, s.n
    FROM credit_accounts a
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(h.amount_micro), 0) AS total, count(*) AS n,
               count(*) FILTER (WHERE r.id IS NULL OR r.status <> 'held' OR r.account_id <> h.account_id
                                OR r.amount_micro <> h.amount_micro OR r.expires_at <> h.expires_at) AS wrong
        FROM credit_reservations_held h LEFT JOIN credit_reservations r ON r.id = h.reservation_id
        WHERE h.account_id = a.id) t
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(r.amount_micro), 0) AS total, count(*) AS n
        FROM credit_reservations r WHERE r.account_id = a.id AND r.status = 'held') s
    WHERE a.id > %(after)s
    ORDER BY a.id
    LIMIT %(limit)s
"""


def reconcile(conn: Conn, *, after: int = 0, limit: int = DEFAULT_CHUNK) -> list[AccountFigures]:
    """The figures of up to `limit` accounts with id > `after`, ascending, from one snapshot."""
    rows = conn.execute(_RECONCILE, {"after": after, "limit": limit}).fetchall()
    return [AccountFigures(*(int(value) for value in row)) for row in rows]


def mismatches(conn: Conn, *, chunk: int = DEFAULT_CHUNK) -> list[Mismatch]:
    """Every account whose stored balance or held amount disagrees with the rows it is
    made of (empty when the invariants hold)."""
    found: list[Mismatch] = []
    after = 0
    while figures := reconcile(conn, after=after, limit=chunk):
        for account in figures:
            if not account.balance_matches:
                found.append(
                    Mismatch(account.account_id, "balance", account.balance_micro, account.ledger_micro)
                )
            if not account.held_matches:
                found.append(Mismatch(account.account_id, "held", account.held_micro, account.holds_micro))
        after = figures[-1].account_id
    return found
