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

# API keys live with auth (`beatless.auth.keys`); the credit API has always offered them.
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
