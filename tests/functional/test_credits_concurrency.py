"""The credit API under 16 concurrent sessions on a real PostgreSQL: no overdraft,
one effect per natural key, and commits racing the cleanup job settle every hold
exactly once (no deadlock, ledger equal to balances)."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from beatless import credits
from beatless.credits.holds_cleanup import release_expired_holds
from tests.support.jobs import run_on_runtime
from tests.support.lambda_context import FakeLambdaContext

THREADS = 16


def account_with(conn: psycopg.Connection, balance: int, name: str = "g") -> int:
    credits.create_user(conn, "owner")
    credits.create_graph(conn, name, "owner", "standard", datetime(2026, 1, 1, tzinfo=UTC))
    account = credits.open_graph_account(conn, name).id
    credits.allocate(conn, account, balance, f"seed:{name}")
    return account


def in_parallel(dsn: str, work: Callable[[psycopg.Connection, int], Any]) -> list[Any]:
    """`work(own_connection, i)` in THREADS threads started together; errors re-raised."""
    barrier = threading.Barrier(THREADS)
    results: list[Any] = [None] * THREADS
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as own:
                barrier.wait()
                results[i] = work(own, i)
        except BaseException as error:  # re-raised below
            errors.append(error)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if errors:
        raise errors[0]
    return results


def later() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


def test_concurrent_holds_never_overdraw(conn: psycopg.Connection, dsn: str) -> None:
    account = account_with(conn, 10 * 700)  # room for exactly 10 holds of 700

    def grab(own: psycopg.Connection, i: int) -> int:
        won = 0
        for n in range(3):
            try:
                credits.reserve(own, account, f"t{i}-{n}", 700, later())
                won += 1
            except credits.InsufficientCreditsError:
                pass
        return won

    assert sum(in_parallel(dsn, grab)) == 10
    state = credits.get_account(conn, account)
    assert (state.held_micro, state.available_micro) == (7000, 0)
    assert credits.mismatches(conn) == []


def test_one_operation_reserved_by_sixteen_sessions_is_one_hold(conn: psycopg.Connection, dsn: str) -> None:
    account = account_with(conn, 1000)
    holds = in_parallel(dsn, lambda own, i: credits.reserve(own, account, "the-op", 600, later()))
    assert len({h.id for h in holds}) == 1
    assert sum(h.created for h in holds) == 1
    assert credits.get_account(conn, account).held_micro == 600


def test_one_allocation_key_allocated_by_sixteen_sessions_is_one_entry(
    conn: psycopg.Connection, dsn: str
) -> None:
    account = account_with(conn, 0)
    entries = in_parallel(dsn, lambda own, i: credits.allocate(own, account, 5000, "alloc:2026-11"))
    assert len({e.id for e in entries}) == 1 and sum(e.created for e in entries) == 1
    assert credits.get_account(conn, account).balance_micro == 5000
    assert credits.mismatches(conn) == []


def test_concurrent_consumption_never_overdraws_and_sums_exactly(conn: psycopg.Connection, dsn: str) -> None:
    account = account_with(conn, 100_000)

    def spend(own: psycopg.Connection, i: int) -> int:
        spent = 0
        for n in range(20):
            try:
                credits.consume(own, account, 333 + i, f"ai:{i}:{n}")
                spent += 333 + i
            except credits.InsufficientCreditsError:
                break
        return spent

    total = sum(in_parallel(dsn, spend))
    state = credits.get_account(conn, account)
    assert state.balance_micro == 100_000 - total >= 0
    assert credits.ledger_sum(conn, account) == state.balance_micro


def test_commits_racing_the_cleanup_settle_each_hold_once(conn: psycopg.Connection, dsn: str) -> None:
    accounts = [account_with(conn, 10**9, f"g{i}") for i in range(4)]
    # The race is at the holds' expiry: commits until it (a hold is committable while its time
    # runs), the cleanup from it on (it expires a hold only once its time is up, by the
    # database's clock).
    expires = datetime.now(UTC) + timedelta(seconds=3)
    for n in range(800):
        credits.reserve(conn, accounts[n % 4], f"op-{n}", 1000 + n, expires)

    def race(own: psycopg.Connection, i: int) -> Any:
        if i % 2:  # half the sessions run the cleanup in small chunks, over and over ...
            released = 0
            while datetime.now(UTC) < expires + timedelta(seconds=1):
                released += run_on_runtime(
                    "credit_reservation_cleanup",
                    {},  # as of now
                    FakeLambdaContext(),
                    functools.partial(release_expired_holds, chunk_size=40),
                )["counts"]["released"]
            return released
        committed = 0  # ... the other half commit holds (each session its own slice) around expiry
        time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds() - 0.1))
        for n in range(i // 2, 800, 8):
            try:
                credits.commit(own, accounts[n % 4], f"op-{n}", 500)
                committed += 1
            except credits.HoldNotActiveError:
                pass
        return committed

    results = in_parallel(dsn, race)
    released = sum(results[1::2])
    committed = sum(results[0::2])
    statuses = dict(
        conn.execute("SELECT status, count(*) FROM credit_reservations GROUP BY status").fetchall()
    )
    assert statuses == {"committed": committed, "expired": released}
    assert committed + released == 800
    entries = conn.execute("SELECT count(*) FROM credit_ledger WHERE kind = 'hold_commit'").fetchone()[0]
    assert entries == committed
    assert sum(credits.get_account(conn, a).balance_micro for a in accounts) == 4 * 10**9 - 500 * committed
    assert credits.mismatches(conn) == []
