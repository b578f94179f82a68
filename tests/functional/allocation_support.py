"""Helpers for the tests of the monthly/weekly credit jobs (allocations, health
check, usage summaries): realistic data built through the credit API, handler
runs, concurrent runs, and waiting for a run to block on a lock."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from beatless import credits
from beatless.db.testing import FakeLambdaContext, migrated_database
from beatless.jobrun import reset_settings
from beatless.local.servers import PostgresServer

CREDIT = credits.MICRO_PER_CREDIT
US = timedelta(microseconds=1)
LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def dsn(postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated database of this test's own, the handlers pointed at it."""
    with migrated_database(postgres_server) as database:
        monkeypatch.delenv("DATABASE_SECRET_ARN", raising=False)
        monkeypatch.setenv("DATABASE_URL", database)
        reset_settings()
        yield database
        reset_settings()


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


def one(conn: psycopg.Connection, sql: str, params: Any = None) -> tuple[Any, ...]:
    """The single row `sql` returns (fails the test when there is none)."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None, sql
    return tuple(row)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def tick(at: datetime, **extra: Any) -> dict[str, Any]:
    """A Scheduler event for `at` (what <aws.scheduler.scheduled-time> becomes)."""
    return {"scheduled_time": iso(at), **extra}


def context(remaining_ms: int = 900_000, shrink_ms: int = 0) -> FakeLambdaContext:
    return FakeLambdaContext(remaining_ms=remaining_ms, shrink_ms=shrink_ms)


def emf_documents(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{") and '"_aws"' in line]


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


def balance(conn: psycopg.Connection, account: int) -> int:
    return credits.get_account(conn, account).balance_micro


def run_concurrently(n: int, call: Callable[[int], Any]) -> list[Any]:
    """`call(i)` in `n` threads released together; returns results (raises the first error)."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def target(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = call(i)
        except BaseException as error:  # re-raised below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a concurrent run did not finish"
    if errors:
        raise errors[0]
    return results


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def blocked_on_lock(conn: psycopg.Connection, application_name: str) -> int | None:
    """The pid of a backend of `application_name` waiting for a lock, if any."""
    row = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock' "
        "AND datname = current_database()",
        (application_name,),
    ).fetchone()
    return None if row is None else int(row[0])


class Background:
    """Run `call()` in a thread; `result()` joins and returns (or raises) its outcome."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self._outcome: list[Any] = []
        self._error: list[BaseException] = []

        def target() -> None:
            try:
                self._outcome.append(call())
            except BaseException as error:  # handed to the test by result()
                self._error.append(error)

        self.thread = threading.Thread(target=target)
        self.thread.start()

    def result(self, timeout: float = 60.0) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the background run did not finish"
        if self._error:
            raise self._error[0]
        return self._outcome[0]
