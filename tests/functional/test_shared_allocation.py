"""shared_credit_allocation on a real PostgreSQL: subscriptions starting and ending
around the allocation time, plans and their caps, replays, 16 concurrent runs,
a run out of time, dry runs, console and malformed events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import shared_credit_allocation
from beatless import credits
from beatless.credits.allocation import allocate_month
from beatless.credits.due import SHARED
from beatless.jobs import MONTHLY_ALLOCATION, job
from beatless.jobs.runtime import JobContext
from tests.support.allocation import (
    CREDIT,
    US,
    Background,
    account_of_user,
    allocation_entries,
    allocations,
    balance,
    context,
    emf_documents,
    one,
    run_concurrently,
    subscription,
    tick,
    wait_until,
)
from tests.support.database import snapshot
from tests.support.jobs import run_on_runtime

JOB = "shared_credit_allocation"
EVENTS = Path(__file__).resolve().parents[2] / "events" / JOB
T = datetime(2025, 12, 1, 3, 0, tzinfo=UTC)  # the scheduled time of events/.../scheduled_tick.json
NEXT = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
STARTER, ADVANCED = 5_000 * CREDIT, 25_000 * CREDIT


def run(event: Any, ctx: Any = None) -> dict[str, Any]:
    return shared_credit_allocation.handler(event, ctx or context())


def run_small_chunks(at: datetime, chunk_size: int, ctx: Any = None, **extra: Any) -> dict[str, Any]:
    def work(job_ctx: JobContext) -> Any:
        return allocate_month(job_ctx, SHARED, chunk_size=chunk_size)

    return run_on_runtime(JOB, tick(at, **extra), ctx or context(), work)


def test_the_schedule_comes_from_the_registry_time() -> None:
    entry = job(JOB)
    assert entry.schedule.expression == MONTHLY_ALLOCATION.cron() == "cron(0 3 1 * ? *)"
    assert entry.mutating and entry.retry.lambda_async_retries == 2


def test_allocates_to_the_subscriptions_active_at_the_scheduled_time(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    long_time = subscription(conn, "long-time", balance=0)
    advanced = subscription(conn, "advanced", "advanced", balance=1_000)
    starts_at_t = subscription(conn, "starts-at-t", started=T, balance=0)  # active from T on
    subscription(conn, "starts-after-t", started=T + US, balance=0)  # a microsecond late
    subscription(conn, "ended-at-t", ended=T, balance=0)  # ended exactly at T: not active
    ends_after_t = subscription(conn, "ends-after-t", ended=T + US, balance=0)
    subscription(conn, "ended-in-november", ended=datetime(2025, 11, 10, tzinfo=UTC), balance=0)
    near_cap = subscription(conn, "near-cap", balance=8_000)  # starter cap 10,000
    above_cap = subscription(conn, "above-cap", balance=12_000)
    subscription(conn, "no-account-yet", account=False)
    capsys.readouterr()

    summary = run(tick(T))

    new_account = account_of_user(conn, "no-account-yet")
    expected = {
        long_time: ("starter", STARTER, STARTER),
        advanced: ("advanced", ADVANCED, ADVANCED),
        starts_at_t: ("starter", STARTER, STARTER),
        ends_after_t: ("starter", STARTER, STARTER),
        near_cap: ("starter", STARTER, 2_000 * CREDIT),
        above_cap: ("starter", STARTER, 0),
        new_account: ("starter", STARTER, STARTER),
    }
    assert allocations(conn) == {(account, "2025-12"): value for account, value in expected.items()}
    granted = sum(value[2] for value in expected.values())
    assert summary["counts"] == {
        "allocations": 7,
        "granted_micro": granted,
        "capped": 2,
        "accounts_opened": 1,
    }
    assert summary["remaining"] == 0 and summary["complete"] and summary["kind"] == "subscription"
    assert balance(conn, advanced) == 26_000 * CREDIT and balance(conn, near_cap) == 10_000 * CREDIT
    assert (above_cap, 0, f"allocation:subscription:{above_cap}:2025-12") in allocation_entries(conn)
    assert credits.mismatches(conn) == []
    (document,) = emf_documents(capsys.readouterr().out)
    assert document["Job"] == JOB and document["Allocations"] == [7] and document["JobSucceeded"] == [1]


def test_replays_have_one_effect_and_the_next_month_its_own(conn: psycopg.Connection) -> None:
    first_sub = subscription(conn, "a", balance=0)
    second_sub = subscription(conn, "b", "advanced", balance=0)
    first = run(tick(T, execution_id="x", attempt_number="1"))
    after_first = snapshot(conn)
    replays = [run(tick(T, execution_id=e, attempt_number=str(n))) for n, e in ((2, "y"), (3, "z"))]
    assert first["counts"]["allocations"] == 2
    assert [r["counts"]["allocations"] for r in replays] == [0, 0]
    assert snapshot(conn) == after_first
    # The subscription ends in mid-December: no January allocation.
    conn.execute(
        "UPDATE repository_subscriptions SET ended_at = %s WHERE user_id = 'b'", (T + timedelta(days=14),)
    )
    january = run(tick(NEXT))
    assert january["counts"]["allocations"] == 1
    assert set(allocations(conn)) == {(first_sub, "2025-12"), (second_sub, "2025-12"), (first_sub, "2026-01")}
    assert balance(conn, first_sub) == 10_000 * CREDIT
    assert credits.mismatches(conn) == []


def test_sixteen_concurrent_runs_allocate_each_subscription_once(conn: psycopg.Connection) -> None:
    for i in range(40):
        subscription(conn, f"u{i:03}", ("starter", "advanced")[i % 2], balance=[0, 9_000][i % 4 // 2])
    subscription(conn, "late", account=False)

    results = run_concurrently(16, lambda i: run_small_chunks(T, chunk_size=3, execution_id=f"run-{i}"))

    assert sum(r["counts"]["allocations"] for r in results) == 41
    assert sum(r["counts"]["accounts_opened"] for r in results) == 1
    assert all(r["remaining"] == 0 for r in results)
    entries = allocation_entries(conn)
    assert len(allocations(conn)) == len(entries) == len({key for _, _, key in entries}) == 41
    assert sum(r["counts"]["granted_micro"] for r in results) == sum(amount for _, amount, _ in entries)
    assert credits.mismatches(conn) == []


def test_a_run_out_of_time_stops_cleanly_and_the_next_run_completes(conn: psycopg.Connection) -> None:
    for i in range(12):
        subscription(conn, f"u{i:03}", balance=0)
    short = run_small_chunks(T, chunk_size=2, ctx=context(remaining_ms=16_000, shrink_ms=2_000))
    assert short["counts"]["allocations"] == 6 and short["remaining"] == 6 and not short["complete"]
    rest = run(tick(T))
    assert rest["counts"]["allocations"] == 6 and rest["complete"]
    assert len(allocation_entries(conn)) == 12 and credits.mismatches(conn) == []


def test_a_connection_killed_mid_batch_leaves_the_rest_to_the_next_run(
    dsn: str, conn: psycopg.Connection
) -> None:
    accounts = [subscription(conn, f"u{i:03}", balance=0) for i in range(40)]
    with psycopg.connect(dsn) as user:
        credits.lock_account(user, accounts[-1])  # so the run cannot have finished when it is killed
        job_run = Background(lambda: run_small_chunks(T, chunk_size=1))
        wait_until(lambda: len(allocations(conn)) >= 10, what="some chunks to commit")
        (pid,) = one(
            conn,
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
            (f"beatless:{JOB}",),
        )
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError):
            job_run.result()
        user.rollback()
    done = len(allocations(conn))
    assert 10 <= done < 40 and len(allocation_entries(conn)) == done
    rest = run(tick(T))
    assert rest["counts"]["allocations"] == 40 - done and rest["complete"]
    assert len(allocations(conn)) == len(allocation_entries(conn)) == 40
    assert credits.mismatches(conn) == []


def test_a_dry_run_reports_and_changes_nothing(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    subscription(conn, "a", balance=0)
    subscription(conn, "b", balance=9_000)
    subscription(conn, "c", account=False)
    before = snapshot(conn)
    capsys.readouterr()
    summary = run(tick(T, dry_run=True))
    assert summary["would"] == {
        "subjects": 3,
        "grant_micro": STARTER + 1_000 * CREDIT + STARTER,
        "capped": 1,
        "without_account": 1,
    }
    assert summary["counts"] == {} and summary["remaining"] == 3
    assert snapshot(conn) == before
    assert emf_documents(capsys.readouterr().out) == []
