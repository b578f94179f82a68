"""The schema keeps its invariants against ANY client statement, not just the
domain API: balances move only with ledger entries, the held amount is exactly
the holds in status 'held', the ledger is append-only, and the jobs' UNIQUE keys
hold."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from psycopg import errors

from beatless import credits
from beatless.local.servers import PostgresServer
from tests.support.database import migrated_database

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FUTURE = datetime.now(UTC) + timedelta(days=30)


@pytest.fixture
def conn(postgres_server: PostgresServer) -> Iterator[psycopg.Connection]:
    with migrated_database(postgres_server) as dsn, psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


def _account(conn: psycopg.Connection, graph: str = "g1", balance: int = 0) -> int:
    credits.create_user(conn, "u1")
    credits.create_graph(conn, graph, "u1", "standard", T0)
    account = credits.open_graph_account(conn, graph).id
    if balance:
        credits.allocate(conn, account, balance, f"seed:{graph}")
    return account


def _stored(conn: psycopg.Connection, account: int) -> tuple[int, int]:
    query = "SELECT balance_micro, held_micro FROM credit_account_totals WHERE id = %s"
    row = conn.execute(query, (account,))
    return tuple(row.fetchone())  # type: ignore[return-value]


def test_balances_and_held_amounts_cannot_be_set_directly(conn: psycopg.Connection) -> None:
    account = _account(conn, balance=1000)
    credits.reserve(conn, account, "op", 300, FUTURE)
    hold_id = conn.execute("SELECT id FROM credit_reservations").fetchone()[0]
    for statement in (
        "UPDATE credit_accounts SET balance_micro = 1000000000",
        "INSERT INTO credit_accounts (graph_id, balance_micro) VALUES ('g1', 7)",
        "DELETE FROM credit_reservations_held",
        "UPDATE credit_reservations_held SET amount_micro = 1",
        f"INSERT INTO credit_reservations_held VALUES ({hold_id}, {account}, 5, now() + interval '1 day')",
        "TRUNCATE credit_reservations_held",
    ):
        with pytest.raises(errors.CheckViolation, match=r"credit_accounts|credit_reservations_held"):
            conn.execute(statement)
    assert _stored(conn, account) == (1000, 300)
    assert credits.mismatches(conn) == []


def test_the_ledger_is_append_only(conn: psycopg.Connection) -> None:
    account = _account(conn, balance=1000)
    for statement in (
        "UPDATE credit_ledger SET amount_micro = 5",
        "DELETE FROM credit_ledger",
        "TRUNCATE credit_ledger CASCADE",
    ):
        with pytest.raises(errors.CheckViolation, match="append-only"):
            conn.execute(statement)
    assert conn.execute("SELECT count(*) FROM credit_ledger").fetchone()[0] == 1
    assert _stored(conn, account) == (1000, 0)


def test_bulk_ledger_inserts_move_every_balance_and_conflicts_move_nothing(conn: psycopg.Connection) -> None:
    accounts = [_account(conn, f"g{i}") for i in range(5)]
    conn.execute(
        "INSERT INTO credit_ledger (account_id, kind, amount_micro, idempotency_key) "
        "SELECT a, 'allocation', 100 * a, 'bulk:' || a FROM unnest(%s::bigint[]) a",
        (accounts,),
    )
    conn.execute(  # a replay of the same keys, plus one new entry
        "INSERT INTO credit_ledger (account_id, kind, amount_micro, idempotency_key) "
        "SELECT a, 'allocation', 100 * a, 'bulk:' || a FROM unnest(%s::bigint[]) a "
        "UNION ALL SELECT %s, 'consumption', -7, 'new' ON CONFLICT (idempotency_key) DO NOTHING",
        (accounts, accounts[0]),
    )
    for account in accounts:
        expected = 100 * account - (7 if account == accounts[0] else 0)
        assert _stored(conn, account) == (expected, 0)
    assert credits.mismatches(conn) == []


@pytest.mark.parametrize(
    ("kind", "amount"),
    [("allocation", -1), ("consumption", 5), ("storage_charge", 0), ("adjustment", 0), ("bonus", 5)],
)
def test_ledger_entries_carry_the_sign_of_their_kind(
    conn: psycopg.Connection, kind: str, amount: int
) -> None:
    account = _account(conn)
    with pytest.raises(errors.CheckViolation):
        conn.execute(
            "INSERT INTO credit_ledger (account_id, kind, amount_micro, idempotency_key) "
            "VALUES (%s, %s, %s, 'k')",
            (account, kind, amount),
        )


def test_a_hold_cannot_drive_the_available_balance_negative_even_by_hand(conn: psycopg.Connection) -> None:
    account = _account(conn, balance=1000)
    conn.execute(
        "INSERT INTO credit_reservations (account_id, operation_id, amount_micro, expires_at) "
        "VALUES (%s, 'a', 600, %s)",
        (account, FUTURE),
    )
    with pytest.raises(errors.CheckViolation, match="below 0"):
        conn.execute(
            "INSERT INTO credit_reservations (account_id, operation_id, amount_micro, expires_at) "
            "VALUES (%s, 'b', 401, %s)",
            (account, FUTURE),
        )
    assert _stored(conn, account) == (1000, 600)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE credit_reservations SET status = 'released', settled_at = now()",  # expired -> released
        "UPDATE credit_reservations SET status = 'held', settled_at = NULL",  # back to held
        "UPDATE credit_reservations SET amount_micro = 1",
    ],
)
def test_a_settled_hold_never_changes_again(conn: psycopg.Connection, statement: str) -> None:
    account = _account(conn, balance=1000)
    credits.reserve(conn, account, "op", 300, FUTURE)
    conn.execute("UPDATE credit_reservations SET status = 'expired', settled_at = now()")
    with pytest.raises(errors.CheckViolation):
        conn.execute(statement)
    assert _stored(conn, account) == (1000, 0)


def test_held_holds_cannot_be_deleted_or_truncated_nor_resized(conn: psycopg.Connection) -> None:
    account = _account(conn, balance=1000)
    credits.reserve(conn, account, "op", 300, FUTURE)
    for statement in (
        "DELETE FROM credit_reservations",
        "TRUNCATE credit_reservations CASCADE",
        "UPDATE credit_reservations SET amount_micro = 1",
        "UPDATE credit_reservations SET expires_at = expires_at + interval '1 day'",
        "UPDATE credit_reservations SET status = 'committed', settled_at = now()",  # no consumed amount
    ):
        with pytest.raises(errors.CheckViolation):
            conn.execute(statement)
    assert _stored(conn, account) == (1000, 300)


def test_settled_holds_may_be_deleted_and_held_stays_right(conn: psycopg.Connection) -> None:
    account = _account(conn, balance=1000)
    credits.reserve(conn, account, "a", 300, FUTURE)
    credits.reserve(conn, account, "b", 200, FUTURE)
    credits.release(conn, account, "a")
    conn.execute("DELETE FROM credit_reservations WHERE status <> 'held'")
    assert _stored(conn, account) == (1000, 200)
    assert credits.mismatches(conn) == []


def test_graph_tier_at_answers_for_any_time(conn: psycopg.Connection) -> None:
    _account(conn)
    change = datetime(2026, 2, 14, 12, tzinfo=UTC)
    credits.set_graph_tier(conn, "g1", "large", change)
    assert credits.graph_tier_at(conn, "g1", T0 - timedelta(seconds=1)) is None
    assert credits.graph_tier_at(conn, "g1", change - timedelta(microseconds=1)) == "standard"
    assert credits.graph_tier_at(conn, "g1", change) == "large"
    periods = conn.execute(
        "SELECT tier, effective_from, effective_to FROM graph_tier_periods WHERE graph_id = 'g1' "
        "ORDER BY effective_from"
    ).fetchall()
    assert periods == [("standard", T0, change), ("large", change, None)]


def test_the_jobs_exactly_once_keys(conn: psycopg.Connection) -> None:
    account = _account(conn)
    hour = datetime(2026, 3, 1, 5, tzinfo=UTC)
    snap = "INSERT INTO storage_usage_snapshots (graph_id, hour, graph_bytes) VALUES ('g1', %s, 10)"
    conn.execute(snap, (hour,))
    with pytest.raises(errors.UniqueViolation):
        conn.execute(snap, (hour,))
    with pytest.raises(errors.CheckViolation):
        conn.execute(snap, (hour + timedelta(minutes=5),))  # not an hour boundary
    entry = credits.allocate(conn, account, 10, "alloc:2026-03")
    allocation = (
        "INSERT INTO monthly_allocations (account_id, month, tier_or_plan, requested_micro, granted_micro, "
        "ledger_id) VALUES (%s, %s, 'standard', 10, 10, %s)"
    )
    conn.execute(allocation, (account, date(2026, 3, 1), entry.id))
    with pytest.raises(errors.UniqueViolation):
        conn.execute(allocation, (account, date(2026, 3, 1), entry.id))
    with pytest.raises(errors.CheckViolation):
        conn.execute(allocation, (account, date(2026, 4, 2), entry.id))  # not a month's first day
    charge = (
        "INSERT INTO storage_charges (graph_id, day, account_id, tier, snapshots, average_bytes, "
        "included_bytes, amount_micro) VALUES ('g1', %s, %s, 'standard', 24, 5, 10, 0)"
    )
    conn.execute(charge, (date(2026, 3, 1), account))
    with pytest.raises(errors.UniqueViolation):
        conn.execute(charge, (date(2026, 3, 1), account))
    summary = "INSERT INTO monthly_usage_summaries (graph_id, month) VALUES ('g1', %s)"
    conn.execute(summary, (date(2026, 3, 1),))
    with pytest.raises(errors.UniqueViolation):
        conn.execute(summary, (date(2026, 3, 1),))


def test_pending_transactions_settle_once(conn: psycopg.Connection) -> None:
    account = _account(conn)
    tx = conn.execute(
        "INSERT INTO credit_transactions (account_id, kind, amount_micro) VALUES (%s, 'ai_usage', -50) "
        "RETURNING id",
        (account,),
    ).fetchone()[0]
    conn.execute(
        "UPDATE credit_transactions SET status = 'reverted', settled_at = now() WHERE id = %s", (tx,)
    )
    with pytest.raises(errors.CheckViolation):
        conn.execute(
            "UPDATE credit_transactions SET status = 'pending', settled_at = NULL WHERE id = %s", (tx,)
        )
    with pytest.raises(errors.CheckViolation):  # finalized needs its ledger entry
        conn.execute(
            "INSERT INTO credit_transactions (account_id, kind, amount_micro, status, settled_at) "
            "VALUES (%s, 'ai_usage', -5, 'finalized', now())",
            (account,),
        )


def test_api_keys_are_never_stored(conn: psycopg.Connection) -> None:
    _account(conn)
    issued = credits.issue_api_key(conn, "u1", "ci")
    row = conn.execute("SELECT * FROM api_keys").fetchone()
    assert all(issued.key not in str(value) for value in row)
    assert issued.key not in repr(issued)
    columns = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                          "WHERE table_name = 'api_keys'")}  # fmt: skip
    assert (
        "key" not in columns and {"prefix", "digest", "expires_at", "revoked_at", "last_used_at"} <= columns
    )


def test_the_audit_finds_what_the_triggers_would_have_prevented(conn: psycopg.Connection) -> None:
    account = _account(conn, balance=1000)
    other = _account(conn, "g2", balance=50)
    credits.reserve(conn, account, "a", 300, FUTURE)
    assert credits.mismatches(conn) == []
    conn.execute("SET session_replication_role = replica")  # triggers off: a bug or a manual edit
    conn.execute("UPDATE credit_reservations SET status = 'released', settled_at = now()")
    conn.execute(
        "INSERT INTO credit_ledger (account_id, kind, amount_micro, idempotency_key) "
        "VALUES (%s, 'adjustment', 5, 'manual')",
        (other,),
    )
    conn.execute("RESET session_replication_role")
    found = {(m.account_id, m.what, m.stored_micro, m.expected_micro) for m in credits.mismatches(conn)}
    assert found == {(account, "held", 300, 0), (other, "balance", 50, 55)}
