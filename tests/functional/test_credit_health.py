"""credit_health_check on a real PostgreSQL: passes on a consistent database with
realistic activity, raises (after publishing its figures) on a corrupted
balance, a corrupted held amount, a missed allocation or an allocation row
that disagrees with its ledger entry; never changes anything; the grace after
the allocation time; a new deployment; chunks and the deadline; events."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import credit_health_check
import graph_credit_allocation
import shared_credit_allocation
from beatless import credits
from beatless.credits.health import CreditInconsistencyError, HealthSettings, check_credit_health
from beatless.errors import InvalidInputError
from beatless.jobs import job
from beatless.jobs.runtime import JobContext
from tests.support.allocation import (
    CREDIT,
    context,
    emf_documents,
    graph,
    subscription,
    tick,
)
from tests.support.database import snapshot
from tests.support.jobs import run_on_runtime

JOB = "credit_health_check"
EVENTS = Path(__file__).resolve().parents[2] / "events" / JOB
MONDAY = datetime(2025, 12, 8, 6, 0, tzinfo=UTC)
SHARED_AT = datetime(2025, 12, 1, 3, 0, tzinfo=UTC)
GRAPH_AT = datetime(2025, 12, 1, 3, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def registry_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The environment the CDK app gives the function: the registry entry's."""
    for name, value in job(JOB).environment.items():
        monkeypatch.setenv(name, value)
    yield


def run(event: Any) -> dict[str, Any]:
    return credit_health_check.handler(event, context())


def allocate(at_shared: datetime = SHARED_AT, at_graph: datetime = GRAPH_AT) -> None:
    shared_credit_allocation.handler(tick(at_shared), context())
    graph_credit_allocation.handler(tick(at_graph), context())


def realistic(conn: psycopg.Connection) -> dict[str, int]:
    """Graphs and subscriptions, allocated for November and December, then used:
    consumption, holds committed / released / still held, storage billed past zero."""
    accounts = {
        "busy": graph(conn, "busy", balance=1_000),
        "large": graph(conn, "large", "large", balance=0),
        "broke": graph(conn, "broke", balance=0),
        "sub": subscription(conn, "reader", balance=0),
    }
    subscription(conn, "former", ended=datetime(2025, 10, 1, tzinfo=UTC), balance=0)
    allocate(datetime(2025, 11, 1, 3, 0, tzinfo=UTC), datetime(2025, 11, 1, 3, 30, tzinfo=UTC))
    allocate()
    expires = datetime.now(UTC) + timedelta(days=1)  # holds still running
    credits.consume(conn, accounts["busy"], 700 * CREDIT, "query-1")
    credits.reserve(conn, accounts["busy"], "op-commit", 300 * CREDIT, expires)
    credits.commit(conn, accounts["busy"], "op-commit", 120 * CREDIT)
    credits.reserve(conn, accounts["busy"], "op-release", 50 * CREDIT, expires)
    credits.release(conn, accounts["busy"], "op-release")
    credits.reserve(conn, accounts["large"], "op-open", 999 * CREDIT, expires)
    credits.consume(conn, accounts["sub"], 10 * CREDIT, "sec-query")
    credits.consume(
        conn,
        accounts["broke"],
        40_000 * CREDIT,
        "storage:broke:2025-12-05",
        kind="storage_charge",
        allow_negative=True,
    )
    return accounts


def corrupt(conn: psycopg.Connection, sql: str, params: tuple[Any, ...]) -> None:
    """Change a stored figure behind the triggers' back (what a bad manual fix would do)."""
    conn.execute("SET session_replication_role = replica")
    try:
        conn.execute(sql, params)
    finally:
        conn.execute("SET session_replication_role = DEFAULT")


def test_a_consistent_database_passes_and_the_figures_are_published(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    realistic(conn)
    before = snapshot(conn)
    capsys.readouterr()

    summary = run(tick(MONDAY))

    assert summary["counts"] == {
        "accounts_checked": 5,
        "balance_mismatches": 0,
        "held_mismatches": 0,
        "negative_balances": 1,
        "missed_shared_allocations": 0,
        "missed_graph_allocations": 0,
        "allocation_mismatches": 0,
    }
    assert summary["complete"] and summary["period"]["label"] == "2025-W50"
    assert summary["expected_allocations"] == {
        "shared": {"allocation_time": "2025-12-01T03:00:00Z", "month": "2025-12", "started": True},
        "graph": {"allocation_time": "2025-12-01T03:30:00Z", "month": "2025-12", "started": True},
    }
    assert summary["examples"] == {"negative_balances": [summary["examples"]["negative_balances"][0]]}
    assert snapshot(conn) == before  # read-only
    (document,) = emf_documents(capsys.readouterr().out)
    assert document["Job"] == JOB and document["JobSucceeded"] == [1]
    assert (document["AccountsChecked"], document["NegativeBalances"], document["BalanceMismatches"]) == (
        [5],
        [1],
        [0],
    )


def test_a_corrupted_balance_raises_after_publishing_and_changes_nothing(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    accounts = realistic(conn)
    corrupt(
        conn,
        "UPDATE credit_accounts SET balance_micro = balance_micro + 1 WHERE id = %s",
        (accounts["busy"],),
    )
    before = snapshot(conn)
    capsys.readouterr()

    with pytest.raises(CreditInconsistencyError) as info:
        run(tick(MONDAY))

    assert "balance_mismatches=1" in str(info.value) and f"'account': {accounts['busy']}" in str(info.value)
    (document,) = emf_documents(capsys.readouterr().out)
    assert document["BalanceMismatches"] == [1] and document["AccountsChecked"] == [5]
    assert "JobSucceeded" not in document  # the missed-run alarm does not count it as a success
    assert snapshot(conn) == before  # it reports; it never "fixes" the balance


def test_a_corrupted_held_amount_raises(conn: psycopg.Connection) -> None:
    realistic(conn)
    # The open hold of "large" loses the row its held amount is computed from.
    corrupt(conn, "DELETE FROM credit_reservations_held", ())
    with pytest.raises(CreditInconsistencyError, match="held_mismatches=1"):
        run(tick(MONDAY))


def test_an_allocation_row_that_disagrees_with_its_ledger_entry_raises(conn: psycopg.Connection) -> None:
    accounts = realistic(conn)
    conn.execute(
        "UPDATE monthly_allocations SET granted_micro = granted_micro - 1 WHERE account_id = %s "
        "AND month = '2025-12-01'",
        (accounts["large"],),
    )
    with pytest.raises(CreditInconsistencyError, match="allocation_mismatches=1"):
        run(tick(MONDAY))


def test_a_missed_allocation_raises_naming_the_subject(conn: psycopg.Connection) -> None:
    realistic(conn)
    # Both existed at the allocation times but were added to the database afterwards
    # (a restore, a migration): nobody allocated their December credits.
    graph(conn, "restored", since=datetime(2025, 11, 2, tzinfo=UTC), balance=0)
    subscription(conn, "restored-reader", started=datetime(2025, 11, 2, tzinfo=UTC), account=False)
    # Not missed: started after the allocation time.
    graph(conn, "new", since=GRAPH_AT + timedelta(minutes=1), balance=0)
    with pytest.raises(CreditInconsistencyError) as info:
        run(tick(MONDAY))
    message = str(info.value)
    assert "missed_shared_allocations=1" in message and "missed_graph_allocations=1" in message
    assert "'restored'" in message
    # The allocation job's next (late) run repairs it; then the check passes.
    allocate()
    assert run(tick(MONDAY))["counts"]["missed_graph_allocations"] == 0


def test_a_month_is_expected_only_after_its_allocation_time_plus_the_grace(conn: psycopg.Connection) -> None:
    graph(conn, "g", balance=0)
    subscription(conn, "s", balance=0)
    allocate(datetime(2025, 11, 1, 3, 0, tzinfo=UTC), datetime(2025, 11, 1, 3, 30, tzinfo=UTC))
    shared_credit_allocation.handler(tick(SHARED_AT), context())
    # December's graph run has not happened yet: it is due two hours after 03:30.
    early = run(tick(datetime(2025, 12, 1, 5, 29, tzinfo=UTC)))
    assert early["expected_allocations"]["graph"]["month"] == "2025-11"
    assert early["expected_allocations"]["shared"]["month"] == "2025-12"  # 03:00 + 2 h has passed
    assert early["counts"]["missed_graph_allocations"] == early["counts"]["missed_shared_allocations"] == 0
    with pytest.raises(CreditInconsistencyError, match="missed_graph_allocations=1"):
        run(tick(datetime(2025, 12, 1, 5, 30, tzinfo=UTC)))


def test_a_new_deployment_before_its_first_allocation_day_is_not_in_debt(conn: psycopg.Connection) -> None:
    graph(conn, "g", balance=0)
    subscription(conn, "s", balance=0)
    summary = run(tick(MONDAY))  # no allocation has ever run
    assert summary["counts"]["missed_graph_allocations"] == 0
    assert summary["counts"]["missed_shared_allocations"] == 0
    assert summary["expected_allocations"]["graph"]["started"] is False


def test_the_first_run_ever_on_an_empty_database_passes(conn: psycopg.Connection) -> None:
    summary = run(tick(MONDAY))
    assert summary["counts"]["accounts_checked"] == 0 and summary["complete"]


def test_chunks_cover_every_account_and_the_deadline_leaves_the_rest_reported(
    conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = [graph(conn, f"g{i:02}", balance=i) for i in range(20)]
    allocate()
    settings = HealthSettings.from_env(os.environ)

    def work(ctx: JobContext) -> Any:
        return check_credit_health(ctx, settings, chunk_size=3)

    def check(ctx: Any) -> dict[str, Any]:
        return run_on_runtime(JOB, tick(MONDAY), ctx, work)

    assert check(context())["counts"]["accounts_checked"] == 20
    # 10 s margin, 2 s less per look at the clock: 4 chunks of 3 accounts, 8 left unchecked.
    short = check(context(remaining_ms=18_000, shrink_ms=2_000))
    assert short["counts"]["accounts_checked"] == 12 and short["remaining"] == 8 and not short["complete"]
    corrupt(conn, "UPDATE credit_accounts SET balance_micro = 0 WHERE id = %s", (accounts[-1],))
    with pytest.raises(CreditInconsistencyError, match="balance_mismatches=1"):
        check(context())  # the last chunk's account is found


def test_a_malformed_environment_is_rejected_naming_the_variable(
    conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph(conn, "g", balance=3)
    before = snapshot(conn)
    for name, value in [
        ("GRAPH_ALLOCATION_SCHEDULE", ""),
        ("SHARED_ALLOCATION_SCHEDULE", "rate(30 days)"),
        ("SHARED_ALLOCATION_SCHEDULE", "cron(0 3 1 * *)"),
        ("ALLOCATION_GRACE_MINUTES", "-5"),
    ]:
        with monkeypatch.context() as patch:
            patch.setenv(name, value)
            with pytest.raises(InvalidInputError) as info:
                run(tick(MONDAY))
            assert info.value.field == name, (name, value)
    assert snapshot(conn) == before
