"""Helpers for the tests of the monthly/weekly credit jobs (allocations, health
check, usage summaries): realistic data built through the credit API, handler
runs, concurrent runs, and waiting for a run to block on a lock."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg

from beatless import credits
from tests.support.jobs import (  # noqa: F401 (re-exported helpers shared by the job tests)
    LONG_AGO,
    US,
    Background,
    balance,
    blocked_on_lock,
    context,
    emf_documents,
    iso,
    run_concurrently,
    tick,
    wait_until,
)

CREDIT = credits.MICRO_PER_CREDIT


def one(conn: psycopg.Connection, sql: str, params: Any = None) -> tuple[Any, ...]:
    """The single row `sql` returns (fails the test when there is none)."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None, sql
    return tuple(row)


def set_balance(conn: psycopg.Connection, account: int, credits_: float, key: str) -> None:
    """Move an account to `credits_` credits with one adjustment entry (any sign)."""
    target = round(credits_ * CREDIT)
    delta = target - credits.get_account(conn, account).balance_micro
    if delta:
        credits.post(conn, account, "adjustment", delta, f"test:{key}")


def graph(
    conn: psycopg.Connection,
    graph_id: str,
    tier: str = "standard",
    *,
    since: datetime = LONG_AGO,
    balance: float | None = None,
    account: bool = True,
) -> int:
    """A graph on `tier` from `since`, with an account holding `balance` credits
    (no account when `account` is False: returns 0)."""
    credits.create_user(conn, "owner")
    credits.create_graph(conn, graph_id, "owner", tier, since)
    if not account:
        return 0
    account_id = credits.open_graph_account(conn, graph_id).id
    if balance is not None:
        set_balance(conn, account_id, balance, f"seed:{graph_id}")
    return account_id


def delete_graph(conn: psycopg.Connection, graph_id: str, at: datetime) -> None:
    conn.execute(
        "UPDATE graphs SET created_at = least(created_at, %s), deleted_at = %s WHERE id = %s",
        (at - timedelta(days=400), at, graph_id),
    )


def subscription(
    conn: psycopg.Connection,
    user: str,
    plan: str = "starter",
    *,
    started: datetime = LONG_AGO,
    ended: datetime | None = None,
    balance: float | None = None,
    account: bool = True,
) -> int:
    """A subscription of `user` to the SEC repository, with an account of `balance`
    credits (no account when `account` is False: returns 0)."""
    credits.create_user(conn, user)
    sub = credits.subscribe(conn, user, "sec", plan, started)
    if ended is not None:
        conn.execute("UPDATE repository_subscriptions SET ended_at = %s WHERE id = %s", (ended, sub))
    if not account:
        return 0
    account_id = credits.open_subscription_account(conn, sub).id
    if balance is not None:
        set_balance(conn, account_id, balance, f"seed:{user}")
    return account_id


def allocations(conn: psycopg.Connection) -> dict[tuple[int, str], tuple[str, int, int]]:
    """(account, 'YYYY-MM') -> (tier or plan, requested, granted)."""
    rows = conn.execute(
        "SELECT account_id, to_char(month, 'YYYY-MM'), tier_or_plan, requested_micro, granted_micro "
        "FROM monthly_allocations"
    ).fetchall()
    return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}


def allocation_entries(conn: psycopg.Connection) -> list[tuple[int, int, str]]:
    """Every ledger entry the allocation jobs wrote: (account, amount, key), by key."""
    rows = conn.execute(
        "SELECT account_id, amount_micro, idempotency_key FROM credit_ledger "
        "WHERE kind = 'allocation' AND idempotency_key LIKE 'allocation:%' ORDER BY idempotency_key"
    ).fetchall()
    return [(int(r[0]), int(r[1]), str(r[2])) for r in rows]


def account_of_graph(conn: psycopg.Connection, graph_id: str) -> int:
    return int(one(conn, "SELECT id FROM credit_accounts WHERE graph_id = %s", (graph_id,))[0])


def account_of_user(conn: psycopg.Connection, user: str) -> int:
    row = one(
        conn,
        "SELECT a.id FROM credit_accounts a JOIN repository_subscriptions s ON s.id = a.subscription_id "
        "WHERE s.user_id = %s",
        (user,),
    )
    return int(row[0])
