"""pending_transaction_processor on a real PostgreSQL, through its handler: stale
pending transactions finalized or reverted as their kind says (boundaries, signs,
negative balances), dry runs, replays, a future tick, 16 concurrent runs, a
killed connection, a run out of time, console and malformed events."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pending_transaction_processor
from beatless import credits
from beatless.credits.pending import InconsistentTransactionsError, PendingSettings, settle_stale_transactions
from beatless.errors import InvalidInputError
from tests.support.database import snapshot
from tests.support.jobs import (
    US,
    balance,
    context,
    emf_documents,
    graph,
    iso,
    kill_when_blocked,
    run_concurrently,
    run_on_runtime,
    tick,
)
from tests.support.lambda_context import FakeLambdaContext

JOB = "pending_transaction_processor"
EVENTS = Path(__file__).resolve().parents[2] / "events" / JOB
T = datetime.fromisoformat("2026-03-10T09:07:00+00:00")  # a :07 tick, in the past
HOUR = timedelta(hours=1)


def run(event: Any, ctx: FakeLambdaContext | None = None) -> dict[str, Any]:
    return pending_transaction_processor.handler(event, ctx or context())


def run_core(chunk_size: int, ctx: Any = None, event: Any = None) -> dict[str, Any]:
    """The job through the runtime with small chunks (to make several of them)."""
    work = functools.partial(settle_stale_transactions, settings=PendingSettings(HOUR), chunk_size=chunk_size)
    return run_on_runtime(JOB, event or tick(T), ctx or context(), work)


def pending(conn: psycopg.Connection, account: int, kind: str, amount: int, created_at: datetime) -> int:
    row = conn.execute(
        "INSERT INTO credit_transactions (account_id, kind, amount_micro, created_at) "
        "VALUES (%s, %s, %s, %s) RETURNING id",
        (account, kind, amount, created_at),
    ).fetchone()
    return int(row[0])


def many_pending(conn: psycopg.Connection, accounts: list[int], n: int) -> None:
    """`n` stale transactions over `accounts`, all four kinds, created in bulk."""
    conn.execute(
        "INSERT INTO credit_transactions (account_id, kind, amount_micro, created_at) "
        "SELECT (%(ids)s::bigint[])[1 + i %% %(k)s], "
        "(ARRAY['ai_usage', 'storage_overage', 'purchase', 'refund'])[1 + i %% 4], "
        "CASE WHEN i %% 4 < 2 THEN -(100 + i) ELSE 100 + i END, "
        "%(t)s::timestamptz - interval '2 hours' - i * interval '1 second' "
        "FROM generate_series(1, %(n)s) i",
        {"ids": accounts, "k": len(accounts), "t": T, "n": n},
    )


def status(conn: psycopg.Connection, tx: int) -> str:
    return str(conn.execute("SELECT status FROM credit_transactions WHERE id = %s", (tx,)).fetchone()[0])


def statuses(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT status, count(*) FROM credit_transactions GROUP BY status").fetchall()
    return {r[0]: int(r[1]) for r in rows}


def transaction_entries(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT idempotency_key, amount_micro FROM credit_ledger WHERE kind = 'transaction'"
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def stale_pending(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT count(*) FROM credit_transactions WHERE status = 'pending' AND created_at <= %s",
        (T - HOUR,),
    ).fetchone()
    return int(row[0])


def test_stale_transactions_are_finalized_or_reverted_as_their_kind_says(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    rich = graph(conn, "rich", balance_micro=5_000_000)
    poor = graph(conn, "poor", balance_micro=1_000)
    ai = pending(conn, rich, "ai_usage", -300_000, T - 2 * HOUR)
    overage = pending(conn, poor, "storage_overage", -4_000, T - 3 * HOUR)  # takes "poor" below 0
    purchase = pending(conn, rich, "purchase", 7_000_000, T - 5 * HOUR)
    refund = pending(conn, poor, "refund", 2_000, T - 2 * HOUR)
    at_boundary = pending(conn, rich, "ai_usage", -11, T - HOUR)  # exactly the threshold old: stale
    too_young = pending(conn, rich, "ai_usage", -13, T - HOUR + US)  # a microsecond younger: waits
    young_purchase = pending(conn, poor, "purchase", 5, T - timedelta(minutes=5))
    done = pending(conn, rich, "ai_usage", -17, T - 9 * HOUR)
    conn.execute(
        "UPDATE credit_transactions SET status = 'reverted', settled_at = %s WHERE id = %s",
        (T - 8 * HOUR, done),
    )
    capsys.readouterr()

    summary = run(tick(T))

    assert summary["counts"] == {"finalized": 3, "finalized_micro": -304_011, "reverted": 2}
    assert summary["remaining"] == 0 and summary["complete"] is True
    assert (summary["as_of"], summary["stale_before"]) == (iso(T), iso(T - HOUR))
    assert [status(conn, t) for t in (ai, overage, at_boundary)] == ["finalized"] * 3
    assert [status(conn, t) for t in (purchase, refund)] == ["reverted"] * 2
    assert [status(conn, t) for t in (too_young, young_purchase)] == ["pending"] * 2
    assert status(conn, done) == "reverted"  # untouched: settled before
    assert transaction_entries(conn) == {
        f"transaction:{ai}": -300_000,
        f"transaction:{overage}": -4_000,
        f"transaction:{at_boundary}": -11,
    }
    linked = conn.execute(
        "SELECT count(*) FROM credit_transactions t JOIN credit_ledger l ON l.id = t.ledger_id "
        "AND l.idempotency_key = 'transaction:' || t.id WHERE t.status = 'finalized'"
    ).fetchone()[0]
    assert linked == 3
    # Finalized debits moved the balances (below 0 too); reverted credits did not.
    assert balance(conn, rich) == 5_000_000 - 300_011
    assert balance(conn, poor) == 1_000 - 4_000
    assert credits.mismatches(conn) == []

    (document,) = emf_documents(capsys.readouterr().out)
    assert document["Job"] == JOB and document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Job"]]
    assert (document["Finalized"], document["Reverted"], document["Remaining"]) == ([3], [2], [0])
    assert document["FinalizedMicro"] == [-304_011] and document["JobSucceeded"] == [1]


def test_first_run_ever_on_an_empty_database(conn: psycopg.Connection) -> None:
    summary = run(tick(T))
    assert summary["counts"] == {"finalized": 0, "finalized_micro": 0, "reverted": 0}
    assert summary["complete"] is True


def test_the_threshold_comes_from_the_environment(
    conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = graph(conn, "g", balance_micro=10**9)
    tx = pending(conn, account, "ai_usage", -5, T - timedelta(minutes=20))
    monkeypatch.setenv("PENDING_TRANSACTION_MAX_AGE_MINUTES", "30")
    assert run(tick(T))["counts"]["finalized"] == 0
    monkeypatch.setenv("PENDING_TRANSACTION_MAX_AGE_MINUTES", "20")
    assert run(tick(T))["counts"]["finalized"] == 1
    assert status(conn, tx) == "finalized"
    monkeypatch.setenv("PENDING_TRANSACTION_MAX_AGE_MINUTES", "soon")
    with pytest.raises(InvalidInputError) as info:
        run(tick(T))
    assert info.value.field == "PENDING_TRANSACTION_MAX_AGE_MINUTES"


def test_a_future_scheduled_time_cannot_settle_a_young_transaction(conn: psycopg.Connection) -> None:
    account = graph(conn, "g", balance_micro=10**9)
    now = conn.execute("SELECT now()").fetchone()[0]
    tx = pending(conn, account, "purchase", 5_000, now - timedelta(minutes=1))
    summary = run(tick(now + timedelta(days=3)))  # a console event typed with the wrong year, say
    assert summary["counts"]["reverted"] == 0 and status(conn, tx) == "pending"


def test_a_sign_that_contradicts_the_kind_is_left_pending_and_fails_the_run_after_the_rest(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    account = graph(conn, "g", balance_micro=10**9)
    good = pending(conn, account, "ai_usage", -50, T - 2 * HOUR)
    credit_as_debit = pending(conn, account, "purchase", -70, T - 2 * HOUR)
    debit_as_credit = pending(conn, account, "ai_usage", 90, T - 2 * HOUR)
    capsys.readouterr()
    with pytest.raises(InconsistentTransactionsError) as info:
        run(tick(T))
    assert info.value.ids == sorted([credit_as_debit, debit_as_credit])
    assert str(credit_as_debit) in str(info.value)
    assert status(conn, good) == "finalized"
    assert status(conn, credit_as_debit) == status(conn, debit_as_credit) == "pending"
    assert balance(conn, account) == 10**9 - 50
    (document,) = emf_documents(capsys.readouterr().out)
    assert (document["Finalized"], document["Inconsistent"]) == ([1], [2]) and "JobSucceeded" not in document


def test_a_dry_run_reports_and_changes_nothing(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    account = graph(conn, "g", balance_micro=10**9)
    pending(conn, account, "ai_usage", -50, T - 2 * HOUR)
    pending(conn, account, "storage_overage", -25, T - 2 * HOUR)
    pending(conn, account, "purchase", 70, T - 2 * HOUR)
    pending(conn, account, "refund", -3, T - 2 * HOUR)  # inconsistent
    pending(conn, account, "ai_usage", -1, T)  # not stale
    before = snapshot(conn)
    capsys.readouterr()
    summary = run(tick(T, dry_run=True))
    assert summary["dry_run"] is True and summary["counts"] == {}
    assert (summary["would_finalize"], summary["would_finalize_micro"]) == (2, -75)
    assert (summary["would_revert"], summary["inconsistent"]) == (1, 1)
    assert summary["remaining"] == 3
    assert snapshot(conn) == before
    assert emf_documents(capsys.readouterr().out) == []


def test_replays_of_one_tick_have_one_effect_and_the_next_tick_its_own(conn: psycopg.Connection) -> None:
    account = graph(conn, "g", balance_micro=10**9)
    for i in range(6):
        pending(conn, account, "ai_usage", -(10 + i), T - HOUR - timedelta(minutes=i))
    for i in range(3):  # become stale by the next tick, 15 minutes later
        pending(conn, account, "ai_usage", -1000, T - HOUR + timedelta(minutes=1 + i))
    first = run(tick(T, execution_id="a", attempt_number="1"))
    after_first = snapshot(conn)
    replays = [run(tick(T, execution_id=e, attempt_number=n)) for e, n in (("b", "2"), ("c", "3"))]
    assert first["counts"]["finalized"] == 6
    assert [r["counts"]["finalized"] for r in replays] == [0, 0]
    assert snapshot(conn) == after_first
    later = run(tick(T + timedelta(minutes=15)))
    assert later["counts"] == {"finalized": 3, "finalized_micro": -3000, "reverted": 0}
    assert statuses(conn) == {"finalized": 9}
    assert balance(conn, account) == 10**9 - sum(10 + i for i in range(6)) - 3000
    assert credits.mismatches(conn) == []


def test_sixteen_simultaneous_runs_settle_every_transaction_once(conn: psycopg.Connection) -> None:
    accounts = [graph(conn, f"g{i}", balance_micro=10**6) for i in range(12)]
    many_pending(conn, accounts, 3000)
    expected_micro = conn.execute(
        "SELECT sum(amount_micro) FROM credit_transactions WHERE kind IN ('ai_usage', 'storage_overage')"
    ).fetchone()[0]

    def one(i: int) -> dict[str, Any]:
        return run(tick(T)) if i % 2 else run_core(chunk_size=100)

    summaries = run_concurrently(16, one)
    assert sum(s["counts"]["finalized"] for s in summaries) == 1500
    assert sum(s["counts"]["reverted"] for s in summaries) == 1500
    assert sum(s["counts"]["finalized_micro"] for s in summaries) == expected_micro
    assert statuses(conn) == {"finalized": 1500, "reverted": 1500}
    assert len(transaction_entries(conn)) == 1500
    assert sum(balance(conn, a) for a in accounts) == 12 * 10**6 + expected_micro
    assert credits.mismatches(conn) == []  # every balance = the sum of its ledger entries


def test_a_connection_killed_inside_a_chunk_loses_only_that_chunk(
    conn: psycopg.Connection, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    accounts = [graph(conn, f"g{i}", balance_micro=10**6) for i in range(5)]
    many_pending(conn, accounts, 1000)
    # The last stale transaction debits an account another session keeps locked: the
    # chunk that reaches it waits (the ledger's balance trigger locks the account).
    blocker = graph(conn, "blocker", balance_micro=10**6)
    last = pending(conn, blocker, "ai_usage", -5, T - HOUR)
    capsys.readouterr()
    error, release = kill_when_blocked(
        conn,
        dsn,
        JOB,
        "SELECT 1 FROM credit_accounts WHERE id = %s FOR UPDATE",
        (blocker,),
        lambda: run_core(chunk_size=100),
    )
    release()
    assert isinstance(error, psycopg.OperationalError)
    assert statuses(conn) == {"finalized": 500, "reverted": 500, "pending": 1}  # 10 chunks committed
    assert status(conn, last) == "pending" and balance(conn, blocker) == 10**6
    assert credits.mismatches(conn) == []
    (document,) = emf_documents(capsys.readouterr().out)
    assert document["Finalized"] == [500] and "JobSucceeded" not in document

    again = run_core(chunk_size=100)
    assert again["counts"] == {"finalized": 1, "finalized_micro": -5, "reverted": 0}
    assert stale_pending(conn) == 0 and balance(conn, blocker) == 10**6 - 5
    assert len(transaction_entries(conn)) == 501
    assert credits.mismatches(conn) == []


def test_a_run_out_of_time_stops_cleanly_and_the_next_run_finishes(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    accounts = [graph(conn, f"g{i}", balance_micro=10**6) for i in range(4)]
    many_pending(conn, accounts, 1000)
    capsys.readouterr()
    # 21 s left, 2 s less per look, 10 s margin: chunks start at 21, 19, 17, 15, 13 and
    # 11 s (1 s above the margin is still twice a fast chunk); at 9 s the run stops.
    first = run_core(chunk_size=100, ctx=FakeLambdaContext(remaining_ms=21_000, shrink_ms=2_000))
    assert first["counts"]["finalized"] + first["counts"]["reverted"] == 600
    assert first["remaining"] == 400 and first["complete"] is False
    (document,) = emf_documents(capsys.readouterr().out)
    assert document["Remaining"] == [400] and document["JobSucceeded"] == [1]
    assert stale_pending(conn) == 400
    second = run_core(chunk_size=100)
    assert second["counts"]["finalized"] + second["counts"]["reverted"] == 400
    assert second["remaining"] == 0 and stale_pending(conn) == 0
    assert len(transaction_entries(conn)) == 500 and credits.mismatches(conn) == []


def test_the_default_threshold_is_an_hour_and_zero_is_refused() -> None:
    assert PendingSettings.from_env({}).max_age == HOUR
    with pytest.raises(InvalidInputError) as info:
        PendingSettings.from_env({"PENDING_TRANSACTION_MAX_AGE_MINUTES": "0"})
    assert info.value.field == "PENDING_TRANSACTION_MAX_AGE_MINUTES"
