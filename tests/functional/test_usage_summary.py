"""monthly_usage_summary on a real PostgreSQL: the previous month's figures with
their boundaries, months of 28, 29, 30 and 31 days, graphs with no usage or no
account, graphs appearing and disappearing, a tier change in mid-month, replays,
16 concurrent runs, a killed connection, a run out of time, dry runs, events."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import monthly_usage_summary
from beatless import credits
from beatless.jobs.periods import previous_month
from beatless.jobs.runtime import JobContext
from beatless.storage.summary import summarize_month
from tests.support.allocation import (
    CREDIT,
    US,
    Background,
    context,
    delete_graph,
    emf_documents,
    graph,
    one,
    run_concurrently,
    tick,
    wait_until,
)
from tests.support.database import snapshot
from tests.support.jobs import run_on_runtime

JOB = "monthly_usage_summary"
EVENTS = Path(__file__).resolve().parents[2] / "events" / JOB
GIB = 1 << 30
FEB_START, FEB_END = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
RUN_FOR_FEB = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def run(event: Any, ctx: Any = None) -> dict[str, Any]:
    return monthly_usage_summary.handler(event, ctx or context())


def run_small_chunks(at: datetime, chunk_size: int, ctx: Any = None, **extra: Any) -> dict[str, Any]:
    def work(job_ctx: JobContext) -> Any:
        return summarize_month(job_ctx, chunk_size=chunk_size)

    return run_on_runtime(JOB, tick(at, **extra), ctx or context(), work)


def ledger(conn: psycopg.Connection, account: int, kind: str, amount: int, key: str, at: datetime) -> int:
    """A ledger entry as it was written at `at` (the balance trigger applies it)."""
    row = one(
        conn,
        "INSERT INTO credit_ledger (account_id, kind, amount_micro, idempotency_key, created_at) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (account, kind, amount, key, at),
    )
    return int(row[0])


def snapshot_at(
    conn: psycopg.Connection, graph_id: str, hour: datetime, graph_bytes: int, files: int = 0
) -> None:
    conn.execute(
        "INSERT INTO storage_usage_snapshots (graph_id, hour, graph_bytes, s3_files_bytes) "
        "VALUES (%s, %s, %s, %s)",
        (graph_id, hour, graph_bytes, files),
    )


def charge(conn: psycopg.Connection, graph_id: str, account: int, day: date, amount: int) -> None:
    ledger_id = ledger(
        conn,
        account,
        "storage_charge",
        -amount,
        f"storage:{graph_id}:{day}",
        datetime(2025, 11, 23, tzinfo=UTC),
    )
    conn.execute(
        "INSERT INTO storage_charges (graph_id, day, account_id, tier, snapshots, average_bytes, "
        "included_bytes, amount_micro, ledger_id) VALUES (%s, %s, %s, 'standard', 24, 0, 0, %s, %s)",
        (graph_id, day, account, amount, ledger_id),
    )


def summaries(conn: psycopg.Connection) -> dict[tuple[str, str], dict[str, Any]]:
    rows = conn.execute(
        "SELECT graph_id, to_char(month, 'YYYY-MM'), tier_at_end, allocated_micro, consumed_micro, "
        "storage_charged_micro, average_storage_bytes, details FROM monthly_usage_summaries"
    ).fetchall()
    return {
        (r[0], r[1]): {
            "tier": r[2],
            "allocated": r[3],
            "consumed": r[4],
            "charged": r[5],
            "average_bytes": r[6],
            "details": r[7],
        }
        for r in rows
    }


def test_summarizes_the_previous_month_within_its_boundaries(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    busy = graph(conn, "busy", balance=0)
    credits.set_graph_tier(conn, "busy", "large", datetime(2026, 2, 14, 12, tzinfo=UTC))  # mid-month
    credits.set_graph_tier(conn, "busy", "xlarge", FEB_END)  # from March: not February's tier
    # February's allocation (by the allocation job's rule) and January's, which is not February's.
    for month, amount in ((date(2026, 1, 1), 1), (date(2026, 2, 1), 8_000 * CREDIT)):
        entry = ledger(conn, busy, "allocation", amount, f"allocation:graph:{busy}:{month:%Y-%m}", FEB_START)
        conn.execute(
            "INSERT INTO monthly_allocations (account_id, month, tier_or_plan, requested_micro, "
            "granted_micro, ledger_id) VALUES (%s, %s, 'standard', %s, %s, %s)",
            (busy, month, 8_000 * CREDIT, amount, entry),
        )
    # Consumption: first and last microsecond of February count; the edges outside do not.
    ledger(conn, busy, "consumption", -100 * CREDIT, "q-start", FEB_START)
    ledger(conn, busy, "consumption", -7, "q-last-us", FEB_END - US)
    committed_at = datetime(2026, 2, 10, tzinfo=UTC)
    (hold,) = one(
        conn,
        "INSERT INTO credit_reservations (account_id, operation_id, amount_micro, status, created_at, "
        "expires_at, settled_at, consumed_micro) "
        "VALUES (%s, 'op-1', %s, 'committed', %s, %s, %s, %s) RETURNING id",
        (
            busy,
            80 * CREDIT,
            committed_at - timedelta(minutes=5),
            committed_at + timedelta(hours=1),
            committed_at,
            50 * CREDIT,
        ),
    )
    conn.execute(
        "INSERT INTO credit_ledger (account_id, kind, amount_micro, idempotency_key, reservation_id, "
        "created_at) VALUES (%s, 'hold_commit', %s, 'hold:op-1:commit', %s, %s)",
        (busy, -50 * CREDIT, hold, committed_at),
    )
    ledger(conn, busy, "consumption", -999, "q-before", FEB_START - US)
    ledger(conn, busy, "consumption", -999, "q-after", FEB_END)
    # Hourly snapshots: February's first and last hour, and the hours just outside.
    snapshot_at(conn, "busy", FEB_START, 10 * GIB, files=2 * GIB)
    snapshot_at(conn, "busy", FEB_END - timedelta(hours=1), 20 * GIB + 1)
    snapshot_at(conn, "busy", FEB_START - timedelta(hours=1), 500 * GIB)
    snapshot_at(conn, "busy", FEB_END, 500 * GIB)
    # Daily storage charges: 1 and 28 February; 31 January and 1 March are other months.
    for day, amount in ((date(2026, 2, 1), 3 * CREDIT), (date(2026, 2, 28), 4 * CREDIT)):
        charge(conn, "busy", busy, day, amount)
    for day in (date(2026, 1, 31), date(2026, 3, 1)):
        charge(conn, "busy", busy, day, 1_000 * CREDIT)
    graph(conn, "idle", balance=0)  # no usage at all
    graph(conn, "no-account", account=False)
    graph(conn, "deleted-mid-month", balance=0)
    delete_graph(conn, "deleted-mid-month", datetime(2026, 2, 20, tzinfo=UTC))
    graph(conn, "deleted-before", balance=0)
    delete_graph(conn, "deleted-before", FEB_START - US)
    graph(conn, "created-in-march", since=FEB_END, balance=0)
    graph(conn, "created-last-us", since=FEB_END - US, balance=0)
    capsys.readouterr()

    result = run(tick(RUN_FOR_FEB))

    assert result["period"] == {
        "start": "2026-02-01T00:00:00Z",
        "end": "2026-03-01T00:00:00Z",
        "label": "2026-02",
    }
    assert result["counts"] == {"summaries": 5} and result["remaining"] == 0 and result["complete"]
    got = summaries(conn)
    assert set(got) == {
        (g, "2026-02") for g in ("busy", "idle", "no-account", "deleted-mid-month", "created-last-us")
    }  # deleted-before and created-in-march did not exist in February
    busy_row = got[("busy", "2026-02")]
    byte_hours = 12 * GIB + 20 * GIB + 1
    assert busy_row["tier"] == "large"
    assert busy_row["allocated"] == 8_000 * CREDIT
    assert busy_row["consumed"] == 150 * CREDIT + 7
    assert busy_row["charged"] == 7 * CREDIT
    assert busy_row["average_bytes"] == byte_hours // 2
    details = busy_row["details"]
    assert (
        details["hours_in_month"] == 672 and details["snapshots"] == 2 and details["storage_charge_days"] == 2
    )
    assert details["byte_hours"] == byte_hours
    assert details["gib_days"] == "1.333333"  # 32 GiB-hours / 24
    assert details["ledger_micro"] == {
        "allocation": 8_000 * CREDIT + 1,
        "consumption": -(100 * CREDIT + 7),
        "hold_commit": -50 * CREDIT,
    }
    idle = got[("idle", "2026-02")]
    assert (idle["allocated"], idle["consumed"], idle["charged"], idle["average_bytes"]) == (0, 0, 0, 0)
    assert idle["details"]["snapshots"] == 0 and idle["details"]["has_account"] is True
    assert got[("no-account", "2026-02")]["details"]["has_account"] is False
    (document,) = emf_documents(capsys.readouterr().out)
    assert document["Job"] == JOB and document["Summaries"] == [5] and document["JobSucceeded"] == [1]


def test_months_of_28_29_30_and_31_days(conn: psycopg.Connection) -> None:
    graph(conn, "g", since=datetime(2020, 1, 1, tzinfo=UTC), balance=0)
    account = int(one(conn, "SELECT id FROM credit_accounts WHERE graph_id = 'g'")[0])
    months = [  # (run time, month, hours, last day); no two adjacent, so the outside edges stay outside
        (datetime(2025, 12, 2, 6, tzinfo=UTC), "2025-11", 720, date(2025, 11, 30)),
        (datetime(2026, 3, 2, 6, tzinfo=UTC), "2026-02", 672, date(2026, 2, 28)),
        (datetime(2026, 8, 2, 6, tzinfo=UTC), "2026-07", 744, date(2026, 7, 31)),
        (datetime(2024, 3, 2, 6, tzinfo=UTC), "2024-02", 696, date(2024, 2, 29)),  # leap year
    ]
    for run_at, _, _, last_day in months:
        period = previous_month(run_at)
        snapshot_at(conn, "g", period.start, GIB)
        snapshot_at(conn, "g", period.end - timedelta(hours=1), 3 * GIB)
        snapshot_at(conn, "g", period.start - timedelta(hours=1), 1000 * GIB)
        snapshot_at(conn, "g", period.end, 1000 * GIB)
        charge(conn, "g", account, period.start.date(), 1)
        charge(conn, "g", account, last_day, 2)
        charge(conn, "g", account, last_day + timedelta(days=1), 1000)
    for run_at, label, hours, _ in months:
        result = run(tick(run_at))
        assert result["period"]["label"] == label and result["hours_in_month"] == hours
        row = summaries(conn)[("g", label)]
        assert (row["details"]["hours_in_month"], row["details"]["snapshots"]) == (hours, 2), label
        assert (row["average_bytes"], row["charged"]) == (2 * GIB, 3), label
        assert row["details"]["storage_charge_days"] == 2, label


def test_the_first_run_ever_and_replays_then_the_next_month(conn: psycopg.Connection) -> None:
    assert run(tick(RUN_FOR_FEB))["counts"] == {"summaries": 0}
    graph(conn, "a", balance=0)
    graph(conn, "b", balance=0)
    first = run(tick(RUN_FOR_FEB, execution_id="x", attempt_number="1"))
    after = snapshot(conn)
    replays = [run(tick(RUN_FOR_FEB, execution_id=e, attempt_number=str(n))) for n, e in ((2, "y"), (3, "z"))]
    assert first["counts"]["summaries"] == 2 and [r["counts"]["summaries"] for r in replays] == [0, 0]
    # Usage recorded late for February does not rewrite the first summary.
    snapshot_at(conn, "a", FEB_START + timedelta(days=3), 9 * GIB)
    run(tick(RUN_FOR_FEB + timedelta(hours=4)))
    assert snapshot(conn)["monthly_usage_summaries"] == after["monthly_usage_summaries"]
    march = run(tick(datetime(2026, 4, 2, 6, tzinfo=UTC)))
    assert march["counts"]["summaries"] == 2
    assert sorted(summaries(conn)) == [("a", "2026-02"), ("a", "2026-03"), ("b", "2026-02"), ("b", "2026-03")]


def test_sixteen_concurrent_runs_write_one_summary_per_graph(conn: psycopg.Connection) -> None:
    for i in range(40):
        graph(conn, f"g{i:03}", balance=0, account=i % 3 != 0)
        snapshot_at(conn, f"g{i:03}", FEB_START + timedelta(hours=i), i * GIB)
    results = run_concurrently(16, lambda i: run_small_chunks(RUN_FOR_FEB, chunk_size=3, execution_id=str(i)))
    assert sum(r["counts"]["summaries"] for r in results) == 40
    assert all(r["remaining"] == 0 for r in results)
    got = summaries(conn)
    assert len(got) == 40
    assert all(got[(f"g{i:03}", "2026-02")]["average_bytes"] == i * GIB for i in range(40))


def test_a_connection_killed_mid_batch_and_a_run_out_of_time_leave_the_rest_to_the_next_run(
    dsn: str, conn: psycopg.Connection
) -> None:
    for i in range(40):
        graph(conn, f"g{i:03}", balance=0)
    short = run_small_chunks(RUN_FOR_FEB, chunk_size=2, ctx=context(remaining_ms=20_000, shrink_ms=2_000))
    assert short["counts"]["summaries"] == 10 and short["remaining"] == 30 and not short["complete"]
    with psycopg.connect(dsn) as user:
        # The last graph stays locked, so the run cannot have finished when it is killed.
        user.execute("SELECT 1 FROM graphs WHERE id = 'g039' FOR UPDATE")
        job_run = Background(lambda: run_small_chunks(RUN_FOR_FEB, chunk_size=1))
        wait_until(lambda: len(summaries(conn)) >= 15, what="some chunks to commit")
        (pid,) = one(
            conn,
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
            (f"beatless:{JOB}",),
        )
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError):
            job_run.result()
        user.rollback()
    done = len(summaries(conn))
    assert 15 <= done < 40
    rest = run(tick(RUN_FOR_FEB))
    assert rest["counts"]["summaries"] == 40 - done and rest["complete"]
    assert len(summaries(conn)) == 40


def test_a_dry_run_reports_and_changes_nothing(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    graph(conn, "a", balance=0)
    graph(conn, "b", account=False)
    before = snapshot(conn)
    capsys.readouterr()
    result = run(tick(RUN_FOR_FEB, dry_run=True))
    assert result["would"] == {"summaries": 2} and result["remaining"] == 2 and result["counts"] == {}
    assert snapshot(conn) == before
    assert emf_documents(capsys.readouterr().out) == []


def test_the_scheduled_tick_summarizes_the_month_before(conn: psycopg.Connection) -> None:
    graph(conn, "a", balance=0)
    scheduled = json.loads((EVENTS / "scheduled_tick.json").read_text())
    assert scheduled["scheduled_time"] == "2025-12-02T06:00:00Z"
    run(scheduled)
    assert ("a", "2025-11") in summaries(conn)  # the tick summarized November
