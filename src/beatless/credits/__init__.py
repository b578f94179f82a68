"""The credit domain API on PostgreSQL (schema: `beatless/db/migrations/`).

Every function takes a psycopg connection, runs in its own
`conn.transaction()` (a savepoint inside a caller's transaction), is
idempotent by its natural key and exact (integer micro-credits, see
`beatless.credits.money`). Errors subclass `InvalidInputError` and name the
argument at fault. Used by the scheduled jobs, the tests and, later, the worker.
The package also holds the cores of the credit jobs (each imported by its own
entry point only): `allocation` (shared_credit_allocation,
graph_credit_allocation; who is due what: `due`), `health`
(credit_health_check), `holds_cleanup` (credit_reservation_cleanup), `pending`
(pending_transaction_processor).

- accounts: `create_user`, `create_graph`, `set_graph_tier`, `graph_tier_at`,
  `subscribe`, `open_graph_account`, `open_subscription_account`,
  `get_account`, `lock_account`
- ledger (balance changes): `consume`, `allocate`, `post`, `ledger_sum`
- holds: `reserve`, `commit`, `release`, `get_hold`
- API keys: `issue_api_key`, `verify_api_key`, `revoke_api_key`
- audit: `mismatches` (balances vs ledger sums, held vs held holds)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from beatless.lazy import lazy_exports

# The API is imported on first use: a job core in this package (e.g. holds_cleanup) must not
# load the whole domain API — nor psycopg — into a Lambda's cold start.
if TYPE_CHECKING:
    from beatless.auth.keys import ApiKey, IssuedApiKey, issue_api_key, revoke_api_key, verify_api_key
    from beatless.credits.accounts import (
        Account,
        create_graph,
        create_user,
        get_account,
        graph_tier_at,
        lock_account,
        open_graph_account,
        open_subscription_account,
        set_graph_tier,
        subscribe,
    )
    from beatless.credits.audit import Mismatch, mismatches
    from beatless.credits.errors import (
        HoldNotActive,
        HoldNotActiveError,
        IdempotencyConflict,
        IdempotencyConflictError,
        InsufficientCredits,
        InsufficientCreditsError,
        UnknownAccount,
        UnknownAccountError,
        UnknownHold,
        UnknownHoldError,
    )
    from beatless.credits.holds import Hold, commit, get_hold, release, reserve
    from beatless.credits.ledger import LedgerEntry, allocate, consume, ledger_sum, post
    from beatless.credits.money import MICRO_PER_CREDIT, to_credits, to_micro

# API keys live with auth (`beatless.auth.keys`); the credit API has always offered them.
_EXPORTS = {
    "Account": "beatless.credits.accounts",
    "ApiKey": "beatless.auth.keys",
    "Hold": "beatless.credits.holds",
    "HoldNotActive": "beatless.credits.errors",
    "HoldNotActiveError": "beatless.credits.errors",
    "IdempotencyConflict": "beatless.credits.errors",
    "IdempotencyConflictError": "beatless.credits.errors",
    "InsufficientCredits": "beatless.credits.errors",
    "InsufficientCreditsError": "beatless.credits.errors",
    "IssuedApiKey": "beatless.auth.keys",
    "LedgerEntry": "beatless.credits.ledger",
    "MICRO_PER_CREDIT": "beatless.credits.money",
    "Mismatch": "beatless.credits.audit",
    "UnknownAccount": "beatless.credits.errors",
    "UnknownAccountError": "beatless.credits.errors",
    "UnknownHold": "beatless.credits.errors",
    "UnknownHoldError": "beatless.credits.errors",
    "allocate": "beatless.credits.ledger",
    "commit": "beatless.credits.holds",
    "consume": "beatless.credits.ledger",
    "create_graph": "beatless.credits.accounts",
    "create_user": "beatless.credits.accounts",
    "get_account": "beatless.credits.accounts",
    "get_hold": "beatless.credits.holds",
    "graph_tier_at": "beatless.credits.accounts",
    "issue_api_key": "beatless.auth.keys",
    "ledger_sum": "beatless.credits.ledger",
    "lock_account": "beatless.credits.accounts",
    "mismatches": "beatless.credits.audit",
    "open_graph_account": "beatless.credits.accounts",
    "open_subscription_account": "beatless.credits.accounts",
    "post": "beatless.credits.ledger",
    "release": "beatless.credits.holds",
    "reserve": "beatless.credits.holds",
    "revoke_api_key": "beatless.auth.keys",
    "set_graph_tier": "beatless.credits.accounts",
    "subscribe": "beatless.credits.accounts",
    "to_credits": "beatless.credits.money",
    "to_micro": "beatless.credits.money",
    "verify_api_key": "beatless.auth.keys",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "MICRO_PER_CREDIT",
    "Account",
    "ApiKey",
    "Hold",
    "HoldNotActive",
    "HoldNotActiveError",
    "IdempotencyConflict",
    "IdempotencyConflictError",
    "InsufficientCredits",
    "InsufficientCreditsError",
    "IssuedApiKey",
    "LedgerEntry",
    "Mismatch",
    "UnknownAccount",
    "UnknownAccountError",
    "UnknownHold",
    "UnknownHoldError",
    "allocate",
    "commit",
    "consume",
    "create_graph",
    "create_user",
    "get_account",
    "get_hold",
    "graph_tier_at",
    "issue_api_key",
    "ledger_sum",
    "lock_account",
    "mismatches",
    "open_graph_account",
    "open_subscription_account",
    "post",
    "release",
    "reserve",
    "revoke_api_key",
    "set_graph_tier",
    "subscribe",
    "to_credits",
    "to_micro",
    "verify_api_key",
]
