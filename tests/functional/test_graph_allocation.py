"""graph_credit_allocation on a real PostgreSQL: the tier in force at the scheduled
time, the balance cap (0 granted is still one allocation), graphs appearing and
disappearing around the allocation time, replays, 16 concurrent runs, a user's
lock held during the run, a killed connection, a run out of time, dry runs,
console and malformed events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import graph_credit_allocation
from beatless import credits
from beatless.credits.allocation import allocate_month
from beatless.credits.due import GRAPHS
from beatless.jobs import GRAPH_ALLOCATION_DELAY_MINUTES, MONTHLY_ALLOCATION, job
from beatless.jobs.runtime import JobContext
from tests.support.allocation import (
    CREDIT,
    US,
    Background,
    account_of_graph,
    allocation_entries,
    allocations,
    balance,
    blocked_on_lock,
    context,
    delete_graph,
    emf_documents,
    graph,
    one,
    run_concurrently,
    set_balance,
    tick,
    wait_until,
)
from tests.support.database import snapshot
from tests.support.jobs import run_on_runtime

JOB = "graph_credit_allocation"
EVENTS = Path(__file__).resolve().parents[2] / "events" / JOB
T = datetime(2025, 12, 1, 3, 30, tzinfo=UTC)  # the scheduled time of events/.../scheduled_tick.json
NEXT = datetime(2026, 1, 1, 3, 30, tzinfo=UTC)
STANDARD, LARGE = 8_000 * CREDIT, 32_000 * CREDIT
STANDARD_CAP = 16_000 * CREDIT


def run(event: Any, ctx: Any = None) -> dict[str, Any]:
    return graph_credit_allocation.handler(event, ctx or context())


def run_small_chunks(at: datetime, chunk_size: int, ctx: Any = None, **extra: Any) -> dict[str, Any]:
    """The same runtime and core as the handler, with small chunks (many per run)."""

    def work(job_ctx: JobContext) -> Any:
        return allocate_month(job_ctx, GRAPHS, chunk_size=chunk_size)

    return run_on_runtime(JOB, tick(at, **extra), ctx or context(), work)


def many_graphs(conn: psycopg.Connection, n: int, prefix: str = "g") -> list[int]:
    """`n` standard graphs with accounts at various balances (some at or above the cap)."""
    accounts = []
    for i in range(n):
        accounts.append(graph(conn, f"{prefix}{i:03}", balance=[0, 5_000, 12_000, 16_000, 20_000][i % 5]))
    return accounts


def test_the_schedule_is_the_shared_allocation_plus_the_delay() -> None:
    entry = job(JOB)
    later = MONTHLY_ALLOCATION.later(GRAPH_ALLOCATION_DELAY_MINUTES)
    assert entry.schedule.expression == later.cron() == "cron(30 3 1 * ? *)"
    assert entry.mutating and entry.retry.lambda_async_retries == 2


def test_allocates_by_the_tier_at_the_scheduled_time_up_to_the_cap(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = graph(conn, "plain", balance=0)
    large = graph(conn, "large", "large", balance=100)
    near_cap = graph(conn, "near-cap", balance=12_000)  # 4,000 fit under the 16,000 cap
    at_cap = graph(conn, "at-cap", balance=16_000)
    above_cap = graph(conn, "above-cap", balance=20_000)
    negative = graph(conn, "negative", balance=-500)  # storage billed past zero
    # Tier changes: at T exactly (in force), a microsecond after T and mid-month (not yet).
    changed_at_t = graph(conn, "up-at-t", balance=0)
    credits.set_graph_tier(conn, "up-at-t", "large", T)
    changed_after = graph(conn, "up-after-t", balance=0)
    credits.set_graph_tier(conn, "up-after-t", "large", T + US)
    mid_month = graph(conn, "up-mid-month", balance=0)
    credits.set_graph_tier(conn, "up-mid-month", "xlarge", datetime(2025, 12, 15, tzinfo=UTC))
    downgraded = graph(conn, "down-in-november", "xlarge", balance=0)
    credits.set_graph_tier(conn, "down-in-november", "standard", datetime(2025, 11, 20, tzinfo=UTC))
    # Graphs around the allocation time.
    graph(conn, "created-after-t", since=T + timedelta(minutes=1), balance=0)
    graph(conn, "created-at-t", since=T, balance=0)
    graph(conn, "deleted-before-t", balance=0)
    delete_graph(conn, "deleted-before-t", T - timedelta(days=3))
    graph(conn, "deleted-at-t", balance=0)
    delete_graph(conn, "deleted-at-t", T)
    graph(conn, "deleted-after-t", balance=0)
    delete_graph(conn, "deleted-after-t", T + timedelta(hours=1))
    graph(conn, "no-account-yet", account=False)
    capsys.readouterr()

    summary = run(tick(T))

    got = allocations(conn)
    month = "2025-12"
    expected = {
        plain: ("standard", STANDARD, STANDARD),
        large: ("large", LARGE, LARGE),
        near_cap: ("standard", STANDARD, 4_000 * CREDIT),
        at_cap: ("standard", STANDARD, 0),
        above_cap: ("standard", STANDARD, 0),
        negative: ("standard", STANDARD, STANDARD),
        changed_at_t: ("large", LARGE, LARGE),
        changed_after: ("standard", STANDARD, STANDARD),
        mid_month: ("standard", STANDARD, STANDARD),
        downgraded: ("standard", STANDARD, STANDARD),
        account_of_graph(conn, "created-at-t"): ("standard", STANDARD, STANDARD),
        account_of_graph(conn, "deleted-after-t"): ("standard", STANDARD, STANDARD),
        account_of_graph(conn, "no-account-yet"): ("standard", STANDARD, STANDARD),
    }
    assert got == {(account, month): value for account, value in expected.items()}
    granted = sum(value[2] for value in expected.values())
    assert summary["counts"] == {
        "allocations": 13,
        "granted_micro": granted,
        "capped": 3,
        "accounts_opened": 1,
    }
    assert summary["remaining"] == 0 and summary["complete"] is True
    assert summary["period"]["label"] == month and summary["allocation_time"] == "2025-12-01T03:30:00Z"
    # Balances moved by exactly the grants, through one ledger entry each (0 included).
    assert balance(conn, near_cap) == STANDARD_CAP
    assert balance(conn, above_cap) == 20_000 * CREDIT
    assert balance(conn, negative) == STANDARD - 500 * CREDIT
    entries = allocation_entries(conn)
    assert len(entries) == 13
    assert (above_cap, 0, f"allocation:graph:{above_cap}:2025-12") in entries
    assert credits.mismatches(conn) == []

    (document,) = emf_documents(capsys.readouterr().out)
    directive = document["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "Beatless/Jobs" and directive["Dimensions"] == [["Job"]]
    assert document["Job"] == JOB
    assert (document["Allocations"], document["Capped"], document["GrantedMicro"]) == ([13], [3], [granted])
    assert (document["AccountsOpened"], document["Remaining"], document["JobSucceeded"]) == ([1], [0], [1])


def test_the_first_run_ever_allocates_only_its_own_month(conn: psycopg.Connection) -> None:
    empty = run(tick(T))
    assert empty["counts"] == {"allocations": 0, "granted_micro": 0, "capped": 0, "accounts_opened": 0}
    account = graph(conn, "old", since=datetime(2025, 6, 1, tzinfo=UTC), balance=0)
    summary = run(tick(T))
    assert summary["counts"]["allocations"] == 1
    assert set(allocations(conn)) == {(account, "2025-12")}  # no back-fill of earlier months


def test_replays_have_one_effect_and_the_next_month_its_own(conn: psycopg.Connection) -> None:
    plain = graph(conn, "plain", balance=0)
    near_cap = graph(conn, "near-cap", balance=12_000)
    mid_month = graph(conn, "up-mid-month", balance=0)
    credits.set_graph_tier(conn, "up-mid-month", "large", datetime(2025, 12, 15, tzinfo=UTC))

    first = run(tick(T, execution_id="a", attempt_number="1"))
    after_first = snapshot(conn)
    # The same scheduled time again: a Scheduler retry, a Lambda retry, a console re-run.
    replays = [run(tick(T, execution_id=e, attempt_number=str(n))) for n, e in ((2, "b"), (3, "c"))]
    assert first["counts"]["allocations"] == 3
    assert [r["counts"]["allocations"] for r in replays] == [0, 0]
    assert [r["counts"]["granted_micro"] for r in replays] == [0, 0]
    assert snapshot(conn) == after_first
    # Even after credits were spent, a replay does not top the capped account up again.
    credits.consume(conn, near_cap, 3_000 * CREDIT, "spend-1")
    run(tick(T + timedelta(hours=5)))  # a late console re-run for December
    assert balance(conn, near_cap) == 13_000 * CREDIT

    january = run(tick(NEXT))
    assert january["counts"]["allocations"] == 3
    got = allocations(conn)
    assert got[(plain, "2026-01")] == ("standard", STANDARD, STANDARD)
    assert got[(near_cap, "2026-01")] == ("standard", STANDARD, 3_000 * CREDIT)  # 13,000 -> 16,000
    assert got[(mid_month, "2025-12")][0] == "standard"  # the December tier at 1 Dec 03:30
    assert got[(mid_month, "2026-01")] == ("large", LARGE, LARGE)  # the upgrade counts from January
    assert len(allocation_entries(conn)) == 6
    assert credits.mismatches(conn) == []


def test_sixteen_concurrent_runs_allocate_each_account_once(conn: psycopg.Connection) -> None:
    accounts = many_graphs(conn, 60)
    graph(conn, "late-account", account=False)

    results = run_concurrently(16, lambda i: run_small_chunks(T, chunk_size=4, execution_id=f"run-{i}"))

    assert sum(r["counts"]["allocations"] for r in results) == 61
    assert sum(r["counts"]["accounts_opened"] for r in results) == 1
    assert all(r["remaining"] == 0 for r in results)
    got = allocations(conn)
    assert len(got) == 61 and {month for _, month in got} == {"2025-12"}
    entries = allocation_entries(conn)
    assert len(entries) == len({key for _, _, key in entries}) == 61
    assert sum(r["counts"]["granted_micro"] for r in results) == sum(amount for _, amount, _ in entries)
    # Each balance is what one grant under the cap gives, and equals its ledger.
    for i, account in enumerate(accounts):
        start = [0, 5_000, 12_000, 16_000, 20_000][i % 5] * CREDIT
        expected = start if start >= STANDARD_CAP else min(start + STANDARD, STANDARD_CAP)
        assert balance(conn, account) == expected
    assert credits.mismatches(conn) == []


def test_an_account_a_user_holds_locked_is_waited_for_not_skipped(dsn: str, conn: psycopg.Connection) -> None:
    accounts = many_graphs(conn, 9)
    busy = accounts[4]
    with psycopg.connect(dsn) as user:  # a user's transaction holding the account's row
        credits.lock_account(user, busy)
        job_run = Background(lambda: run_small_chunks(T, chunk_size=2))
        # Pass 1 skipped it; pass 2 waits for it instead of finishing without it.
        wait_until(lambda: blocked_on_lock(conn, f"beatless:{JOB}") is not None, what="the run to wait")
        assert (busy, "2025-12") not in allocations(conn)
        user.commit()
    summary = job_run.result()
    assert summary["counts"]["allocations"] == 9 and summary["remaining"] == 0
    assert (busy, "2025-12") in allocations(conn)
    assert credits.mismatches(conn) == []


def test_a_connection_killed_mid_batch_leaves_the_rest_to_the_next_run(
    dsn: str, conn: psycopg.Connection
) -> None:
    accounts = many_graphs(conn, 60)
    with psycopg.connect(dsn) as user:
        # The last account stays locked, so the run cannot have finished when it is killed.
        credits.lock_account(user, accounts[-1])
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
    done = allocations(conn)
    assert 10 <= len(done) < 60  # the chunks committed before the kill stay, once
    assert len(allocation_entries(conn)) == len(done)  # no ledger entry without its allocation row
    second = run(tick(T))
    assert second["counts"]["allocations"] == 60 - len(done) and second["remaining"] == 0
    assert len(allocations(conn)) == len(allocation_entries(conn)) == 60
    assert credits.mismatches(conn) == []


def test_a_run_out_of_time_stops_cleanly_and_the_next_run_completes(conn: psycopg.Connection) -> None:
    many_graphs(conn, 30)
    # 10 s safety margin; 2 s less on every look at the clock: 5 chunks fit.
    short = run_small_chunks(T, chunk_size=3, ctx=context(remaining_ms=20_000, shrink_ms=2_000))
    assert short["counts"]["allocations"] == 15
    assert short["remaining"] == 15 and short["complete"] is False and short["stopped_for_deadline"]
    rest = run(tick(T, execution_id="retry"))
    assert rest["counts"]["allocations"] == 15 and rest["complete"]
    assert len(allocation_entries(conn)) == 30
    assert credits.mismatches(conn) == []


def test_a_dry_run_reports_and_changes_nothing(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    graph(conn, "plain", balance=0)
    graph(conn, "near-cap", balance=12_000)
    graph(conn, "no-account-yet", account=False)
    before = snapshot(conn)
    capsys.readouterr()
    summary = run(tick(T, dry_run=True))
    assert summary["dry_run"] is True and summary["counts"] == {}
    assert summary["would"] == {
        "subjects": 3,
        "grant_micro": STANDARD + 4_000 * CREDIT + STANDARD,
        "capped": 1,
        "without_account": 1,
    }
    assert summary["remaining"] == 3
    assert snapshot(conn) == before
    assert emf_documents(capsys.readouterr().out) == []


def test_balance_changes_between_months_are_respected_by_the_cap(conn: psycopg.Connection) -> None:
    account = graph(conn, "spender", balance=0)
    run(tick(T))
    set_balance(conn, account, 15_500, "topped-up")
    run(tick(NEXT))
    assert allocations(conn)[(account, "2026-01")] == ("standard", STANDARD, 500 * CREDIT)
    assert balance(conn, account) == STANDARD_CAP
