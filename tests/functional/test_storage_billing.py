"""storage_billing on a real PostgreSQL, through its handler: one charge per graph
and UTC day from that day's snapshots above the tier's included storage (exact
micro-credits), zero charges, missing hours, balances going negative, tier
changes, the last day of 28/29/31-day months, a month of charges summing
exactly, dry runs, replays, 16 concurrent runs, a killed connection, a run out
of time, graphs without a tier, console and malformed events."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from math import floor
from pathlib import Path
from typing import Any

import psycopg
import pytest

import storage_billing
from beatless import credits
from beatless.storage import UntieredGraphsError, bill_storage
from tests.support.database import snapshot
from tests.support.jobs import (
    balance,
    context,
    emf_documents,
    graph,
    kill_when_blocked,
    run_concurrently,
    run_on_runtime,
    tick,
)
from tests.support.lambda_context import FakeLambdaContext

JOB = "storage_billing"
EVENTS = Path(__file__).resolve().parents[2] / "events" / JOB
GIB = 2**30
CREDIT = credits.MICRO_PER_CREDIT
RATE = 1_000_000  # micro-credits per GiB-day above the included storage (every tier of 0001)
STANDARD, LARGE = 100 * GIB, 500 * GIB  # included storage
T = datetime.fromisoformat("2026-03-11T02:00:00+00:00")  # bills 2026-03-10
DAY = datetime.fromisoformat("2026-03-10T00:00:00+00:00")


def run(event: Any, ctx: FakeLambdaContext | None = None) -> dict[str, Any]:
    return storage_billing.handler(event, ctx or context())


def run_core(chunk_size: int, ctx: Any = None, event: Any = None) -> dict[str, Any]:
    work = functools.partial(bill_storage, chunk_size=chunk_size)
    return run_on_runtime(JOB, event or tick(T), ctx or context(), work)


def usage(
    conn: psycopg.Connection,
    graph_id: str,
    day: datetime,
    total: int | Sequence[int],
    hours: Sequence[int] = range(24),
) -> None:
    """Snapshots of `graph_id` for `hours` of `day`, `total` bytes each (or one per hour),
    spread over the four categories as the collector would write them."""
    per_hour = [total] * len(hours) if isinstance(total, int) else list(total)
    conn.execute(
        "INSERT INTO storage_usage_snapshots (graph_id, hour, s3_files_bytes, s3_tables_bytes, "
        "graph_bytes, subgraph_bytes) "
        "SELECT %s, %s + h * interval '1 hour', b / 4, b / 4, b / 4, b - 3 * (b / 4) "
        "FROM unnest(%s::int[], %s::bigint[]) AS u(h, b)",
        (graph_id, day, list(hours), per_hour),
    )


def exact_floor(byte_hours: int, n: int, included: int) -> int:
    """The documented rule with exact rationals: floor((average - included) * rate / GiB)."""
    above = Fraction(byte_hours, n) - included
    return floor(above * RATE / GIB) if above > 0 else 0


def charges(conn: psycopg.Connection) -> dict[tuple[str, date], tuple[Any, ...]]:
    """(graph, day) -> (tier, snapshots, average, included, amount, has ledger entry)."""
    rows = conn.execute(
        "SELECT graph_id, day, tier, snapshots, average_bytes, included_bytes, amount_micro, "
        "ledger_id IS NOT NULL FROM storage_charges"
    ).fetchall()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def storage_entries(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT idempotency_key, amount_micro FROM credit_ledger WHERE kind = 'storage_charge'"
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def test_each_graph_day_is_charged_its_average_above_the_included_storage(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    d = date(2026, 3, 10)
    over = graph(conn, "over", balance_micro=1000 * CREDIT)
    usage(conn, "over", DAY, 150 * GIB)  # 50 GiB above, all day: 50 credits
    graph(conn, "under", balance_micro=CREDIT)
    usage(conn, "under", DAY, 80 * GIB)
    graph(conn, "idle")
    usage(conn, "idle", DAY, 0)  # measured, nothing stored
    graph(conn, "unmeasured")  # no snapshot that day: nothing to bill
    usage(conn, "unmeasured", DAY - timedelta(days=1), 900 * GIB)
    partial = graph(conn, "partial", balance_micro=1000 * CREDIT)
    usage(conn, "partial", DAY, 110 * GIB, hours=[0, 1, 2, 13, 14, 23])  # collector down 18 h
    uneven = graph(conn, "uneven", balance_micro=1000 * CREDIT)
    uneven_bytes = [STANDARD + 3 * GIB + 12_345, STANDARD - 7, STANDARD + 999, STANDARD]
    usage(conn, "uneven", DAY, uneven_bytes, hours=[3, 4, 5, 6])
    broke = graph(conn, "broke", balance_micro=2 * CREDIT)
    usage(conn, "broke", DAY, 120 * GIB)  # 20 credits on a balance of 2: billed anyway
    graph(conn, "no-account", account=False)
    usage(conn, "no-account", DAY, 101 * GIB)
    # Hours just outside the day do not count: 23:00 the day before, 00:00 the day after.
    usage(conn, "over", DAY - timedelta(days=1), 900 * GIB, hours=[23])
    usage(conn, "over", DAY + timedelta(days=1), 900 * GIB, hours=[0])
    capsys.readouterr()

    summary = run(tick(T))

    uneven_amount = exact_floor(sum(uneven_bytes), 4, STANDARD)
    assert 3 * CREDIT // 4 < uneven_amount < CREDIT  # about 3/4 GiB above on average
    amounts = {
        "over": 50 * CREDIT,
        "partial": 10 * CREDIT,
        "uneven": uneven_amount,
        "broke": 20 * CREDIT,
        "no-account": CREDIT,
    }
    assert summary["day"] == "2026-03-10" and summary["period"]["label"] == "2026-03-10"
    assert summary["counts"] == {
        "charged": 5,
        "charged_micro": sum(amounts.values()),
        "zero_charges": 2,
        "accounts_opened": 1,
    }
    assert summary["remaining"] == 0 and summary["complete"] is True
    assert charges(conn) == {
        ("over", d): ("standard", 24, 150 * GIB, STANDARD, 50 * CREDIT, True),
        ("under", d): ("standard", 24, 80 * GIB, STANDARD, 0, False),
        ("idle", d): ("standard", 24, 0, STANDARD, 0, False),
        ("partial", d): ("standard", 6, 110 * GIB, STANDARD, 10 * CREDIT, True),
        ("uneven", d): ("standard", 4, sum(uneven_bytes) // 4, STANDARD, uneven_amount, True),
        ("broke", d): ("standard", 24, 120 * GIB, STANDARD, 20 * CREDIT, True),
        ("no-account", d): ("standard", 24, 101 * GIB, STANDARD, CREDIT, True),
    }
    assert storage_entries(conn) == {f"storage:{g}:2026-03-10": -a for g, a in amounts.items()}
    assert balance(conn, over) == 950 * CREDIT
    assert balance(conn, partial) == 990 * CREDIT
    assert balance(conn, uneven) == 1000 * CREDIT - uneven_amount
    assert balance(conn, broke) == -18 * CREDIT  # storage is billed even below 0
    opened = credits.open_graph_account(conn, "no-account")
    assert opened.balance_micro == -CREDIT
    assert credits.mismatches(conn) == []

    (document,) = emf_documents(capsys.readouterr().out)
    assert document["Job"] == JOB and document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Job"]]
    assert (document["Charged"], document["ZeroCharges"], document["AccountsOpened"]) == ([5], [2], [1])
    assert document["ChargedMicro"] == [sum(amounts.values())] and document["JobSucceeded"] == [1]


def test_a_tier_change_in_mid_month_bills_each_day_at_the_tier_of_its_end(conn: psycopg.Connection) -> None:
    start = datetime(2026, 3, 14, tzinfo=UTC)
    up = graph(conn, "up", balance_micro=10_000 * CREDIT)
    credits.set_graph_tier(conn, "up", "large", datetime(2026, 3, 15, 12, tzinfo=UTC))  # noon upgrade
    down = graph(conn, "down", "large", balance_micro=10_000 * CREDIT)
    credits.set_graph_tier(conn, "down", "standard", datetime(2026, 3, 15, 23, tzinfo=UTC))
    midnight = graph(conn, "midnight", balance_micro=10_000 * CREDIT)
    credits.set_graph_tier(conn, "midnight", "large", datetime(2026, 3, 16, tzinfo=UTC))  # the 16th's
    for i in range(3):
        for g in ("up", "down", "midnight"):
            usage(conn, g, start + timedelta(days=i), 300 * GIB)
    for i in range(3):
        run(tick(start + timedelta(days=i + 1, hours=2)))
    billed = {(g, d.day): (c[0], c[4]) for (g, d), c in charges(conn).items()}
    assert billed == {
        ("up", 14): ("standard", 200 * CREDIT),
        ("up", 15): ("large", 0),  # upgraded during the day: the whole day at the new tier
        ("up", 16): ("large", 0),
        ("down", 14): ("large", 0),
        ("down", 15): ("standard", 200 * CREDIT),  # downgraded at 23:00: the day ends on standard
        ("down", 16): ("standard", 200 * CREDIT),
        ("midnight", 14): ("standard", 200 * CREDIT),
        ("midnight", 15): ("standard", 200 * CREDIT),  # a change at 00:00 belongs to the next day
        ("midnight", 16): ("large", 0),
    }
    assert balance(conn, up) == 9_800 * CREDIT
    assert balance(conn, down) == balance(conn, midnight) == 9_600 * CREDIT
    assert credits.mismatches(conn) == []


@pytest.mark.parametrize(
    ("scheduled", "billed"),
    [
        ("2026-03-01T02:00:00Z", date(2026, 2, 28)),  # the last day of a 28-day February
        ("2024-03-01T02:00:00Z", date(2024, 2, 29)),  # leap year
        ("2026-08-01T02:00:00Z", date(2026, 7, 31)),  # a 31-day month
        ("2026-01-01T02:00:00Z", date(2025, 12, 31)),  # the year's last day
        ("2026-05-01T02:00:00Z", date(2026, 4, 30)),  # a 30-day month
    ],
)
def test_the_last_day_of_a_month_is_billed_from_its_own_utc_hours(
    conn: psycopg.Connection, scheduled: str, billed: date
) -> None:
    account = graph(conn, "g", balance_micro=10_000 * CREDIT)
    day = datetime(billed.year, billed.month, billed.day, tzinfo=UTC)
    usage(conn, "g", day, 101 * GIB)
    usage(conn, "g", day - timedelta(days=1), 999 * GIB, hours=[23])
    usage(conn, "g", day + timedelta(days=1), 999 * GIB, hours=[0, 1])  # the billing day's own hours
    summary = run({"scheduled_time": scheduled})
    assert summary["day"] == billed.isoformat()
    assert charges(conn) == {("g", billed): ("standard", 24, 101 * GIB, STANDARD, CREDIT, True)}
    assert storage_entries(conn) == {f"storage:g:{billed.isoformat()}": -CREDIT}
    assert balance(conn, account) == 9_999 * CREDIT


def test_a_month_of_daily_charges_sums_exactly(conn: psycopg.Connection) -> None:
    account = graph(conn, "g", balance_micro=0)
    start = datetime(2026, 7, 1, tzinfo=UTC)
    expected = []
    for i in range(31):  # July: 31 days, growing by an odd number of bytes an hour
        hourly = [STANDARD + (i * 24 + h) * 7_777_777 for h in range(24)]
        usage(conn, "g", start + timedelta(days=i), hourly)
        expected.append(exact_floor(sum(hourly), 24, STANDARD))
    for i in range(31):
        run(tick(start + timedelta(days=i + 1, hours=2)))
    amounts = [c[4] for _, c in sorted(charges(conn).items())]
    assert amounts == expected
    assert sum(storage_entries(conn).values()) == -sum(expected) == balance(conn, account)
    assert credits.mismatches(conn) == []


def test_first_run_ever_on_an_empty_database(conn: psycopg.Connection) -> None:
    summary = run(tick(T))
    assert summary["counts"] == {"charged": 0, "charged_micro": 0, "zero_charges": 0, "accounts_opened": 0}
    assert summary["complete"] is True


def test_a_graph_without_a_tier_that_day_fails_the_run_after_the_others_are_billed(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    graph(conn, "billed", balance_micro=CREDIT)
    usage(conn, "billed", DAY, 101 * GIB)
    graph(conn, "early", since=DAY + timedelta(days=1))  # its first tier starts after the day
    usage(conn, "early", DAY, 101 * GIB, hours=[22, 23])
    capsys.readouterr()
    with pytest.raises(UntieredGraphsError) as info:
        run(tick(T))
    assert info.value.graph_ids == ["early"] and "early" in str(info.value)
    assert list(charges(conn)) == [("billed", date(2026, 3, 10))]
    (document,) = emf_documents(capsys.readouterr().out)
    assert document["Charged"] == [1] and "JobSucceeded" not in document


def test_a_dry_run_reports_and_changes_nothing(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    graph(conn, "a", balance_micro=CREDIT)
    usage(conn, "a", DAY, 102 * GIB)
    graph(conn, "b", account=False)
    usage(conn, "b", DAY, 103 * GIB)
    graph(conn, "c")
    usage(conn, "c", DAY, GIB)
    before = snapshot(conn)
    capsys.readouterr()
    summary = run(tick(T, dry_run=True))
    assert summary["dry_run"] is True and summary["counts"] == {}
    assert (summary["would_charge"], summary["would_charge_micro"]) == (2, 5 * CREDIT)
    assert summary["would_record_zero"] == 1 and summary["remaining"] == 3
    assert snapshot(conn) == before
    assert emf_documents(capsys.readouterr().out) == []


def test_replays_of_one_tick_have_one_effect_and_the_next_day_its_own(conn: psycopg.Connection) -> None:
    account = graph(conn, "g", balance_micro=100 * CREDIT)
    usage(conn, "g", DAY, 110 * GIB, hours=range(23))
    usage(conn, "g", DAY + timedelta(days=1), 120 * GIB)
    first = run(tick(T, execution_id="a", attempt_number="1"))
    usage(conn, "g", DAY, 900 * GIB, hours=[23])  # a snapshot arriving late cannot re-bill the day
    after_first = snapshot(conn)
    replays = [run(tick(T, execution_id=e, attempt_number=n)) for e, n in (("b", "2"), ("c", "3"))]
    assert first["counts"]["charged_micro"] == 10 * CREDIT
    assert [r["counts"]["charged"] + r["counts"]["zero_charges"] for r in replays] == [0, 0]
    assert snapshot(conn) == after_first
    assert run(tick(T + timedelta(days=1)))["counts"]["charged_micro"] == 20 * CREDIT
    assert balance(conn, account) == 70 * CREDIT
    assert credits.mismatches(conn) == []


def _many(conn: psycopg.Connection, n: int) -> list[int]:
    """`n` graphs with accounts and a day of snapshots each: every third under the
    included storage, the others 1..n GiB above it."""
    credits.create_user(conn, "owner")
    conn.execute(
        "INSERT INTO graphs (id, owner_id, created_at) "
        "SELECT 'g' || lpad(i::text, 4, '0'), 'owner', '2026-01-01Z' FROM generate_series(1, %s) i",
        (n,),
    )
    conn.execute(
        "INSERT INTO graph_tier_history (graph_id, effective_from, tier) "
        "SELECT id, '2026-01-01Z', 'standard' FROM graphs"
    )
    conn.execute("INSERT INTO credit_accounts (graph_id) SELECT id FROM graphs ORDER BY id")
    conn.execute(
        "INSERT INTO storage_usage_snapshots (graph_id, hour, s3_files_bytes) "
        "SELECT g.id, %s::timestamptz + h * interval '1 hour', "
        "CASE WHEN i %% 3 = 0 THEN %s ELSE %s + i * %s::bigint END "
        "FROM (SELECT id, row_number() OVER (ORDER BY id) AS i FROM graphs) g, generate_series(0, 23) h",
        (DAY, 50 * GIB, STANDARD, GIB),
    )
    return [int(r[0]) for r in conn.execute("SELECT id FROM credit_accounts ORDER BY id").fetchall()]


def test_sixteen_simultaneous_runs_charge_every_graph_day_once(conn: psycopg.Connection) -> None:
    n = 240
    _many(conn, n)
    expected = sum(i * CREDIT for i in range(1, n + 1) if i % 3)

    def one(i: int) -> dict[str, Any]:
        return run(tick(T)) if i % 2 else run_core(chunk_size=10)

    summaries = run_concurrently(16, one)
    assert sum(s["counts"]["charged"] for s in summaries) == 160
    assert sum(s["counts"]["zero_charges"] for s in summaries) == 80
    assert sum(s["counts"]["charged_micro"] for s in summaries) == expected
    assert len(charges(conn)) == 240 and len(storage_entries(conn)) == 160
    assert -sum(storage_entries(conn).values()) == expected
    total = conn.execute("SELECT sum(balance_micro) FROM credit_accounts").fetchone()[0]
    assert total == -expected
    assert credits.mismatches(conn) == []  # every balance = the sum of its ledger entries


def test_a_connection_killed_inside_a_chunk_loses_only_that_chunk(
    conn: psycopg.Connection, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _many(conn, 200)
    # The graph billed last has an account another session keeps locked: the chunk
    # that charges it waits inside its transaction (the ledger trigger locks accounts).
    blocker = graph(conn, "zz-last", balance_micro=CREDIT)
    usage(conn, "zz-last", DAY, 101 * GIB)
    capsys.readouterr()
    error, release = kill_when_blocked(
        conn,
        dsn,
        JOB,
        "SELECT 1 FROM credit_accounts WHERE id = %s FOR UPDATE",
        (blocker,),
        lambda: run_core(chunk_size=50),
    )
    release()
    assert isinstance(error, psycopg.OperationalError)
    assert len(charges(conn)) == 200  # four chunks committed, the fifth rolled back
    assert balance(conn, blocker) == CREDIT
    (document,) = emf_documents(capsys.readouterr().out)
    assert document["Charged"][0] + document["ZeroCharges"][0] == 200 and "JobSucceeded" not in document
    again = run_core(chunk_size=50)
    assert again["counts"]["charged"] == 1 and again["counts"]["zero_charges"] == 0
    assert len(charges(conn)) == 201 and balance(conn, blocker) == 0
    assert credits.mismatches(conn) == []


def test_a_run_out_of_time_stops_cleanly_and_the_next_run_finishes(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    _many(conn, 90)
    capsys.readouterr()
    # 21 s left, 2 s less per look, 10 s margin: six chunks of 10, then it stops.
    first = run_core(chunk_size=10, ctx=FakeLambdaContext(remaining_ms=21_000, shrink_ms=2_000))
    assert first["counts"]["charged"] + first["counts"]["zero_charges"] == 60
    assert first["remaining"] == 30 and first["complete"] is False
    (document,) = emf_documents(capsys.readouterr().out)
    assert document["Remaining"] == [30] and document["JobSucceeded"] == [1]
    second = run_core(chunk_size=10)
    assert second["counts"]["charged"] + second["counts"]["zero_charges"] == 30
    assert second["remaining"] == 0 and len(charges(conn)) == 90
    assert credits.mismatches(conn) == []
