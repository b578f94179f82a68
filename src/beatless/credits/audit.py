"""Consistency checks of the credit tables (tests, benchmarks, credit_health_check).

The invariants, kept by the schema's triggers: every account's balance equals
the sum of its ledger entries, and its held amount equals the sum of its holds
in status `held` (never negative).
"""

from __future__ import annotations

from dataclasses import dataclass

from beatless.credits.accounts import Conn


@dataclass(frozen=True)
class Mismatch:
    account_id: int
    what: str  # "balance" or "held"
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

_HELD_SQL = """
SELECT a.id, a.held_micro, coalesce(h.total, 0)
FROM credit_accounts a
LEFT JOIN (SELECT account_id, sum(amount_micro) AS total FROM credit_reservations
           WHERE status = 'held' GROUP BY account_id) h
       ON h.account_id = a.id
WHERE a.held_micro <> coalesce(h.total, 0)
ORDER BY a.id
"""


def mismatches(conn: Conn) -> list[Mismatch]:
    """Every account whose stored balance or held amount disagrees with the rows
    it is made of (empty when the invariants hold)."""
    found = [Mismatch(int(r[0]), "balance", int(r[1]), int(r[2])) for r in conn.execute(_BALANCE_SQL)]
    found += [Mismatch(int(r[0]), "held", int(r[1]), int(r[2])) for r in conn.execute(_HELD_SQL)]
    return found
