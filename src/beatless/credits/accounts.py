"""Users, graphs and their tier history, subscriptions, credit accounts.

Every function takes a psycopg connection and runs in its own
`conn.transaction()` (a savepoint when the caller already has a transaction),
and is idempotent by its natural key: calling it again returns what exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beatless.credits.errors import IdempotencyConflictError, UnknownAccountError
from beatless.db.arguments import Conn, check_id, check_time
from beatless.errors import InvalidInputError


@dataclass(frozen=True)
class Account:
    id: int
    graph_id: str | None
    subscription_id: int | None
    balance_micro: int  # stored; = the sum of the account's ledger entries
    held_micro: int  # computed: the sum of its holds in status 'held'

    @property
    def available_micro(self) -> int:
        return self.balance_micro - self.held_micro


def create_user(conn: Conn, user_id: str) -> None:
    check_id("user_id", user_id)
    conn.execute("INSERT INTO users (id) VALUES (%s) ON CONFLICT (id) DO NOTHING", (user_id,))


def create_graph(conn: Conn, graph_id: str, owner_id: str, tier: str, effective_from: datetime) -> None:
    """A graph of `owner_id` on `tier` from `effective_from` (its first tier row)."""
    check_id("graph_id", graph_id)
    check_id("owner_id", owner_id)
    check_time("effective_from", effective_from)
    with conn.transaction():
        conn.execute(
            "INSERT INTO graphs (id, owner_id) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
            (graph_id, owner_id),
        )
        owner = conn.execute("SELECT owner_id FROM graphs WHERE id = %s", (graph_id,)).fetchone()[0]
        if owner != owner_id:
            raise IdempotencyConflictError("graph_id", f"graph {graph_id!r} exists with another owner")
        set_graph_tier(conn, graph_id, tier, effective_from)


def set_graph_tier(conn: Conn, graph_id: str, tier: str, effective_from: datetime) -> None:
    """From `effective_from` on, `graph_id` is on `tier` (a new history row; replays are no-ops)."""
    check_time("effective_from", effective_from)
    if not conn.execute("SELECT 1 FROM tiers WHERE name = %s", (tier,)).fetchone():
        raise InvalidInputError("tier", f"unknown tier {tier!r}")
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO graph_tier_history (graph_id, effective_from, tier) VALUES (%s, %s, %s) "
            "ON CONFLICT (graph_id, effective_from) DO NOTHING RETURNING tier",
            (graph_id, effective_from, tier),
        ).fetchone()
        if row is None:
            existing = conn.execute(
                "SELECT tier FROM graph_tier_history WHERE graph_id = %s AND effective_from = %s",
                (graph_id, effective_from),
            ).fetchone()[0]
            if existing != tier:
                raise IdempotencyConflictError(
                    "effective_from", f"graph {graph_id!r} already changes to {existing!r} at that time"
                )


def graph_tier_at(conn: Conn, graph_id: str, at: datetime) -> str | None:
    """The tier of `graph_id` in force at `at` (None before its first tier)."""
    check_time("at", at)
    row = conn.execute("SELECT graph_tier_at(%s, %s)", (graph_id, at)).fetchone()
    return row[0] if row else None


def subscribe(conn: Conn, user_id: str, repository: str, plan: str, started_at: datetime) -> int:
    """The id of `user_id`'s subscription to the shared `repository` (created if new)."""
    check_id("user_id", user_id)
    check_time("started_at", started_at)
    with conn.transaction():
        if not conn.execute("SELECT 1 FROM subscription_plans WHERE name = %s", (plan,)).fetchone():
            raise InvalidInputError("plan", f"unknown subscription plan {plan!r}")
        if not conn.execute("SELECT 1 FROM shared_repositories WHERE name = %s", (repository,)).fetchone():
            raise InvalidInputError("repository", f"unknown shared repository {repository!r}")
        conn.execute(
            "INSERT INTO repository_subscriptions (user_id, repository, plan, started_at) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (user_id, repository) DO NOTHING",
            (user_id, repository, plan, started_at),
        )
        row = conn.execute(
            "SELECT id FROM repository_subscriptions WHERE user_id = %s AND repository = %s",
            (user_id, repository),
        ).fetchone()
        return int(row[0])


def open_graph_account(conn: Conn, graph_id: str) -> Account:
    """The credit account of `graph_id` (opened, empty, if it had none)."""
    check_id("graph_id", graph_id)
    with conn.transaction():
        if not conn.execute("SELECT 1 FROM graphs WHERE id = %s", (graph_id,)).fetchone():
            raise InvalidInputError("graph_id", f"unknown graph {graph_id!r}")
        conn.execute(
            "INSERT INTO credit_accounts (graph_id) VALUES (%s) ON CONFLICT (graph_id) DO NOTHING",
            (graph_id,),
        )
        row = conn.execute(f"SELECT {_TOTALS} WHERE graph_id = %s", (graph_id,))
        return _account(row.fetchone())


def open_subscription_account(conn: Conn, subscription_id: int) -> Account:
    """The credit account of a shared-repository subscription (opened if it had none)."""
    with conn.transaction():
        if not conn.execute(
            "SELECT 1 FROM repository_subscriptions WHERE id = %s", (subscription_id,)
        ).fetchone():
            raise InvalidInputError("subscription_id", f"unknown subscription {subscription_id!r}")
        conn.execute(
            "INSERT INTO credit_accounts (subscription_id) VALUES (%s) "
            "ON CONFLICT (subscription_id) DO NOTHING",
            (subscription_id,),
        )
        row = conn.execute(f"SELECT {_TOTALS} WHERE subscription_id = %s", (subscription_id,))
        return _account(row.fetchone())


def get_account(conn: Conn, account_id: int) -> Account:
    row = conn.execute(f"SELECT {_TOTALS} WHERE id = %s", (account_id,)).fetchone()
    if row is None:
        raise UnknownAccountError("account_id", f"no credit account {account_id!r}")
    return _account(row)


def lock_account(conn: Conn, account_id: Any) -> Account:
    """Lock the account row for the rest of the caller's transaction and return it.

    The held sum is read by a second statement, after the lock is granted: under
    READ COMMITTED it then sees every hold committed by whoever held the lock
    before (one statement would compute it from the snapshot taken before waiting).
    """
    if isinstance(account_id, bool) or not isinstance(account_id, int):
        raise InvalidInputError("account_id", f"must be an integer account id, got {account_id!r}")
    locked = conn.execute("SELECT 1 FROM credit_accounts WHERE id = %s FOR UPDATE", (account_id,)).fetchone()
    if locked is None:
        raise UnknownAccountError("account_id", f"no credit account {account_id!r}")
    return _account(conn.execute(f"SELECT {_TOTALS} WHERE id = %s", (account_id,)).fetchone())


# The view computes held = the sum of the account's rows in credit_reservations_held.
_TOTALS = "id, graph_id, subscription_id, balance_micro, held_micro FROM credit_account_totals"


def _account(row: Any) -> Account:
    return Account(int(row[0]), row[1], row[2], int(row[3]), int(row[4]))
