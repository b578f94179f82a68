"""credit_reservation_cleanup through its Lambda handler, on a real PostgreSQL:
the effect on realistic data and its edges, a console run from the future, dry
runs, replays and the metrics it publishes (console and malformed events:
tests/functional/test_job_events.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import credit_reservation_cleanup
from beatless import credits
from beatless.errors import InvalidInputError
from beatless.jobs.resources import reset_resources
from tests.support.database import snapshot
from tests.support.lambda_context import FakeLambdaContext

EVENTS = Path(__file__).resolve().parents[2] / "events" / "credit_reservation_cleanup"
T = datetime(2026, 11, 23, 9, 15, tzinfo=UTC)  # the scheduled time of events/.../scheduled_tick.json
US = timedelta(microseconds=1)


def run(event: Any, context: FakeLambdaContext | None = None) -> dict[str, Any]:
    return credit_reservation_cleanup.handler(event, context or FakeLambdaContext())


def tick(at: datetime = T, **extra: Any) -> dict[str, Any]:
    return {"scheduled_time": at.isoformat().replace("+00:00", "Z"), **extra}


def new_account(conn: psycopg.Connection, name: str, balance: int = 10**12) -> int:
    credits.create_user(conn, "owner")
    credits.create_graph(conn, name, "owner", "standard", T - timedelta(days=60))
    account = credits.open_graph_account(conn, name).id
    credits.allocate(conn, account, balance, f"seed:{name}")
    return account


def add_hold(
    conn: psycopg.Connection, account: int, op: str, amount: int, expires_at: datetime, status: str = "held"
) -> int:
    """A hold created an hour before it expires (as the worker would have made it then)."""
    settled = None if status == "held" else expires_at - timedelta(minutes=30)
    consumed = amount if status == "committed" else None
    row = conn.execute(
        "INSERT INTO credit_reservations (account_id, operation_id, amount_micro, status, created_at, "
        "expires_at, settled_at, consumed_micro) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (account, op, amount, status, expires_at - timedelta(hours=1), expires_at, settled, consumed),
    ).fetchone()
    return int(row[0])


def statuses(conn: psycopg.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT operation_id, status FROM credit_reservations").fetchall())


def held_of(conn: psycopg.Connection, account: int) -> int:
    return credits.get_account(conn, account).held_micro


def emf_documents(text: str) -> list[dict[str, Any]]:
    documents = []
    for line in text.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            documents.append(json.loads(line))
    return documents


def test_expires_exactly_the_holds_due_at_the_scheduled_time(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    busy = new_account(conn, "busy")  # many holds, most of them due
    quiet = new_account(conn, "quiet")
    settled = new_account(conn, "settled")
    for i in range(400):
        add_hold(conn, busy, f"busy-{i}", 1_000 + i, T - timedelta(minutes=i % 90) - US * i)
    add_hold(conn, busy, "busy-future", 7, T + timedelta(minutes=5))
    add_hold(conn, quiet, "at-boundary", 11, T)  # expires exactly at the scheduled time: due
    add_hold(conn, quiet, "one-us-later", 13, T + US)  # a microsecond later: not yet
    add_hold(conn, settled, "was-committed", 17, T - timedelta(hours=2), status="committed")
    add_hold(conn, settled, "was-released", 19, T - timedelta(hours=2), status="released")
    add_hold(conn, settled, "was-expired", 23, T - timedelta(days=1), status="expired")
    ledger_before = conn.execute("SELECT * FROM credit_ledger ORDER BY id").fetchall()
    balances_before = conn.execute("SELECT id, balance_micro FROM credit_accounts ORDER BY id").fetchall()
    capsys.readouterr()

    summary = run(tick())

    due_busy = sum(1_000 + i for i in range(400))
    assert summary["counts"] == {"released": 401, "released_micro": due_busy + 11}
    assert summary["remaining"] == 0 and summary["complete"] is True and summary["dry_run"] is False
    assert summary["cutoff"] == "2026-11-23T09:15:00Z"
    assert summary["period"] == {
        "start": "2026-11-23T09:15:00Z",
        "end": "2026-11-23T09:30:00Z",
        "label": "2026-11-23T09:15Z",
    }
    status = statuses(conn)
    assert {status[f"busy-{i}"] for i in range(400)} == {"expired"}
    assert status["at-boundary"] == "expired"
    assert status["one-us-later"] == "held" and status["busy-future"] == "held"
    assert (status["was-committed"], status["was-released"], status["was-expired"]) == (
        "committed",
        "released",
        "expired",
    )
    assert held_of(conn, busy) == 7 and held_of(conn, quiet) == 13 and held_of(conn, settled) == 0
    # Holds are not ledger entries: balances and the ledger did not move.
    assert conn.execute("SELECT * FROM credit_ledger ORDER BY id").fetchall() == ledger_before
    assert (
        conn.execute("SELECT id, balance_micro FROM credit_accounts ORDER BY id").fetchall()
        == balances_before
    )
    assert credits.mismatches(conn) == []
    # The freed credits can be held again.
    assert credits.get_account(conn, quiet).available_micro == 10**12 - 13

    (document,) = emf_documents(capsys.readouterr().out)
    directive = document["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "Beatless/Jobs" and directive["Dimensions"] == [["Job"]]
    assert document["Job"] == "credit_reservation_cleanup"
    assert {m["Name"] for m in directive["Metrics"]} == {
        "Released",
        "ReleasedMicro",
        "Remaining",
        "JobSucceeded",
    }
    assert (document["Released"], document["Remaining"], document["JobSucceeded"]) == ([401], [0], [1])
    assert document["ReleasedMicro"] == [due_busy + 11]


def test_first_run_ever_on_an_empty_database(conn: psycopg.Connection) -> None:
    summary = run(tick())
    assert summary["counts"] == {"released": 0, "released_micro": 0}
    assert summary["remaining"] == 0 and summary["complete"]


def test_a_console_run_from_the_future_expires_nothing_that_still_has_time(conn: psycopg.Connection) -> None:
    account = new_account(conn, "g")
    now = datetime.now(UTC)
    credits.reserve(conn, account, "running", 5_000, now + timedelta(hours=1))
    add_hold(conn, account, "due", 7, now - timedelta(minutes=1))

    summary = run(tick(now + timedelta(hours=2)))  # a console mistake: two hours ahead

    assert summary["clamped"] is True and summary["counts"]["released"] == 1  # only the due one
    assert statuses(conn) == {"running": "held", "due": "expired"}
    credits.commit(conn, account, "running", 4_000)  # its owner can still commit it
    assert statuses(conn)["running"] == "committed"
    assert credits.mismatches(conn) == []


def test_the_metrics_keep_the_single_job_dimension_whatever_powertools_is_told(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "something-else")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Wrong/Namespace")
    capsys.readouterr()
    run(tick())
    (document,) = emf_documents(capsys.readouterr().out)
    directive = document["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "Beatless/Jobs" and directive["Dimensions"] == [["Job"]]
    assert "service" not in document


def test_a_dry_run_reports_and_changes_nothing(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    account = new_account(conn, "g")
    for i in range(5):
        add_hold(conn, account, f"due-{i}", 100, T - timedelta(minutes=i))
    add_hold(conn, account, "later", 100, T + timedelta(minutes=1))
    before = snapshot(conn)
    capsys.readouterr()
    summary = run(tick(dry_run=True))
    assert summary["dry_run"] is True
    assert (summary["would_release"], summary["would_release_micro"], summary["accounts"]) == (5, 500, 1)
    assert summary["counts"] == {} and summary["remaining"] == 5
    assert snapshot(conn) == before
    assert emf_documents(capsys.readouterr().out) == []  # a dry run is not a run for the alarms


def test_replays_of_one_tick_have_one_effect_and_the_next_tick_its_own(conn: psycopg.Connection) -> None:
    account = new_account(conn, "g")
    for i in range(10):
        add_hold(conn, account, f"now-{i}", 10, T - timedelta(minutes=i))
    for i in range(4):
        add_hold(conn, account, f"next-{i}", 1000, T + timedelta(minutes=1 + i))
    first = run(tick(execution_id="a", attempt_number="1"))
    after_first = snapshot(conn)
    replays = [run(tick(execution_id=e, attempt_number=str(n))) for n, e in ((2, "b"), (3, "c"))]
    assert first["counts"]["released"] == 10
    assert [r["counts"]["released"] for r in replays] == [0, 0]
    assert snapshot(conn) == after_first
    later = run(tick(T + timedelta(minutes=15)))
    assert later["counts"] == {"released": 4, "released_micro": 4000}
    assert set(statuses(conn).values()) == {"expired"}
    assert held_of(conn, account) == 0
    assert credits.mismatches(conn) == []


def test_misconfigured_environment_names_the_variable_before_touching_anything(
    conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATEMENT_TIMEOUT_MS", "295000")  # does not fit 300 s minus the 10 s margin
    reset_resources()
    with pytest.raises(InvalidInputError) as info:
        run(tick())
    assert info.value.field == "STATEMENT_TIMEOUT_MS"
    monkeypatch.delenv("STATEMENT_TIMEOUT_MS")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "credit_reservation_cleanup")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:hunter2@db.internal:5432/beatless")
    reset_resources()
    with pytest.raises(InvalidInputError) as refused:
        run(tick())
    assert refused.value.field == "DATABASE_URL" and "hunter2" not in str(refused.value)
