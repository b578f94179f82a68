"""Consistency checks of the credit tables (tests, benchmarks, credit_health_check).

The invariants, kept by the schema's triggers: every account's balance equals
the sum of its ledger entries, and `credit_reservations_held` (whose sum per
account is the held amount) has exactly the holds in status `held`.
"""

from __future__ import annotations

from dataclasses import dataclass

from beatless.db.arguments import Conn


@dataclass(frozen=True)
class Mismatch:
    account_id: int
    what: str  # "balance", or "held": the holds in status 'held' vs credit_reservations_held
    stored_micro: int
    expected_micro: int


_BALANCE_SQL = """
SELECT a.id, a.balance_micro, coalesce(l.total, 0)
FROM credit_accounts a
LEFT JOIN (SELECT account_id, sum(amount_micro) AS total FROM credit_ledger GROUP BY account_id) l
       ON l.account_id = a.id
WHERE a.balance_micro <> coalesce(l.total, 0)
ORDER BY a.id
"""

# Per account: the rows the held amount is computed from (credit_reservations_held)
# against the holds whose status is 'held'; a row on one side only, or differing in
# account, amount or expiry, makes the sums, counts or the `wrong` count differ.
_HELD_SQL = """
WITH by_status AS (
    SELECT account_id, sum(amount_micro) AS total, count(*) AS n
    FROM credit_reservations WHERE status = 'held' GROUP BY account_id
), by_table AS (
    SELECT h.account_id, sum(h.amount_micro) AS total, count(*) AS n,
           count(*) FILTER (WHERE r.id IS NULL OR r.status <> 'held' OR r.account_id <> h.account_id
                            OR r.amount_micro <> h.amount_micro OR r.expires_at <> h.expires_at) AS wrong
    FROM credit_reservations_held h LEFT JOIN credit_reservations r ON r.id = h.reservation_id
    GROUP BY h.account_id
)
SELECT coalesce(t.account_id, s.account_id), coalesce(t.total, 0), coalesce(s.total, 0)
FROM by_table t FULL JOIN by_status s ON s.account_id = t.account_id
WHERE coalesce(t.total, 0) <> coalesce(s.total, 0) OR coalesce(t.n, 0) <> coalesce(s.n, 0)
   OR coalesce(t.wrong, 0) > 0
ORDER BY 1
"""


def mismatches(conn: Conn) -> list[Mismatch]:
    """Every account whose stored balance or held amount disagrees with the rows
    it is made of (empty when the invariants hold)."""
    found = [Mismatch(int(r[0]), "balance", int(r[1]), int(r[2])) for r in conn.execute(_BALANCE_SQL)]
    found += [Mismatch(int(r[0]), "held", int(r[1]), int(r[2])) for r in conn.execute(_HELD_SQL)]
    return found
