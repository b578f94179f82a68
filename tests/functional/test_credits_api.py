"""The credit domain API on a real PostgreSQL: exact amounts, idempotency by
natural key, clean refusals naming the argument, and unchanged state after one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from beatless import credits
from beatless.errors import InvalidInputError
from beatless.local.servers import PostgresServer
from tests.support.database import migrated_database, snapshot

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _later(hours: float = 1) -> datetime:
    return datetime.now(UTC) + timedelta(hours=hours)


@pytest.fixture
def conn(postgres_server: PostgresServer) -> Iterator[psycopg.Connection]:
    with migrated_database(postgres_server) as dsn, psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def account(conn: psycopg.Connection) -> int:
    credits.create_user(conn, "u1")
    credits.create_graph(conn, "g1", "u1", "standard", T0)
    account_id = credits.open_graph_account(conn, "g1").id
    credits.allocate(conn, account_id, 1_000_000, "seed")
    return account_id


def _state(conn: psycopg.Connection, account: int) -> tuple[int, int, int]:
    a = credits.get_account(conn, account)
    return a.balance_micro, a.held_micro, a.available_micro


def test_reserve_commit_release_move_exact_amounts(conn: psycopg.Connection, account: int) -> None:
    hold = credits.reserve(conn, account, "query-1", 300_000, _later())
    assert hold.created and hold.status == "held"
    assert _state(conn, account) == (1_000_000, 300_000, 700_000)
    committed = credits.commit(conn, account, "query-1", 123_457)
    assert committed.status == "committed" and committed.consumed_micro == 123_457
    assert _state(conn, account) == (876_543, 0, 876_543)
    credits.reserve(conn, account, "query-2", 500_000, _later())
    released = credits.release(conn, account, "query-2")
    assert released.status == "released"
    assert _state(conn, account) == (876_543, 0, 876_543)
    assert credits.ledger_sum(conn, account) == 876_543
    kinds = conn.execute(
        "SELECT kind, amount_micro, idempotency_key FROM credit_ledger ORDER BY id"
    ).fetchall()
    assert kinds == [("allocation", 1_000_000, "seed"), ("hold_commit", -123_457, f"hold:{hold.id}:commit")]


def test_reserving_twice_for_one_operation_is_one_hold(conn: psycopg.Connection, account: int) -> None:
    first = credits.reserve(conn, account, "op", 400_000, _later())
    again = credits.reserve(conn, account, "op", 400_000, _later(2))
    assert again.id == first.id and not again.created
    assert _state(conn, account) == (1_000_000, 400_000, 600_000)
    with pytest.raises(credits.IdempotencyConflictError) as info:
        credits.reserve(conn, account, "op", 1, _later())
    assert info.value.field == "operation_id"


def test_a_short_balance_is_refused_naming_the_amount_and_nothing_changes(
    conn: psycopg.Connection, account: int
) -> None:
    credits.reserve(conn, account, "big", 900_000, _later())
    before = snapshot(conn)
    with pytest.raises(credits.InsufficientCreditsError) as info:
        credits.reserve(conn, account, "more", 100_001, _later())
    assert info.value.field == "amount_micro"
    assert "100001 exceeds the available balance" in str(info.value)
    with pytest.raises(credits.InsufficientCreditsError):
        credits.consume(conn, account, 100_001, "ai:1")
    assert snapshot(conn) == before
    assert credits.reserve(conn, account, "exact", 100_000, _later()).created  # exactly what is left
    assert _state(conn, account) == (1_000_000, 1_000_000, 0)


def test_commit_rules(conn: psycopg.Connection, account: int) -> None:
    credits.reserve(conn, account, "op", 100, _later())
    with pytest.raises(InvalidInputError) as info:
        credits.commit(conn, account, "op", 101)
    assert info.value.field == "consumed_micro"
    credits.commit(conn, account, "op", 0)  # nothing consumed: no ledger entry, the hold is freed
    assert credits.commit(conn, account, "op", 0).status == "committed"  # replay
    with pytest.raises(credits.IdempotencyConflictError):
        credits.commit(conn, account, "op", 5)
    assert _state(conn, account) == (1_000_000, 0, 1_000_000)
    assert conn.execute("SELECT count(*) FROM credit_ledger").fetchone()[0] == 1
    credits.reserve(conn, account, "gone", 100, _later())
    credits.release(conn, account, "gone")
    with pytest.raises(credits.HoldNotActiveError, match="released"):
        credits.commit(conn, account, "gone", 50)
    with pytest.raises(credits.UnknownHoldError) as unknown:
        credits.commit(conn, account, "never", 1)
    assert unknown.value.field == "operation_id"


def test_a_hold_past_its_expiry_cannot_be_committed(conn: psycopg.Connection, account: int) -> None:
    conn.execute(  # a hold whose time ran out before the cleanup came by
        "INSERT INTO credit_reservations (account_id, operation_id, amount_micro, created_at, expires_at) "
        "VALUES (%s, 'late', 500, now() - interval '2 hours', now() - interval '1 hour')",
        (account,),
    )
    with pytest.raises(credits.HoldNotActiveError, match="expired at"):
        credits.commit(conn, account, "late", 500)
    assert _state(conn, account) == (1_000_000, 500, 999_500)


def test_release_is_idempotent_and_leaves_settled_holds_alone(conn: psycopg.Connection, account: int) -> None:
    credits.reserve(conn, account, "op", 100, _later())
    credits.commit(conn, account, "op", 60)
    assert credits.release(conn, account, "op").status == "committed"
    credits.reserve(conn, account, "op2", 100, _later())
    assert credits.release(conn, account, "op2").status == "released"
    assert credits.release(conn, account, "op2").status == "released"
    assert _state(conn, account) == (999_940, 0, 999_940)


def test_consume_is_idempotent_and_may_go_negative_only_when_allowed(
    conn: psycopg.Connection, account: int
) -> None:
    entry = credits.consume(conn, account, 250_000, "ai:tokens:1")
    assert entry.created and entry.amount_micro == -250_000
    replay = credits.consume(conn, account, 250_000, "ai:tokens:1")
    assert replay.id == entry.id and not replay.created
    with pytest.raises(credits.IdempotencyConflictError):
        credits.consume(conn, account, 1, "ai:tokens:1")
    storage = credits.consume(
        conn, account, 2_000_000, "storage:g1:2026-01-01", kind="storage_charge", allow_negative=True
    )
    assert storage.amount_micro == -2_000_000
    assert _state(conn, account) == (-1_250_000, 0, -1_250_000)
    with pytest.raises(credits.InsufficientCreditsError):  # a hold needs available credits
        credits.reserve(conn, account, "op", 1, _later())


def test_allocate_is_idempotent_and_respects_the_cap(conn: psycopg.Connection, account: int) -> None:
    first = credits.allocate(conn, account, 700_000, "alloc:2026-02", cap_micro=1_500_000)
    assert first.amount_micro == 500_000  # 1,000,000 + 500,000 reaches the cap
    again = credits.allocate(conn, account, 700_000, "alloc:2026-02", cap_micro=1_500_000)
    assert again.id == first.id and not again.created
    at_cap = credits.allocate(conn, account, 700_000, "alloc:2026-03", cap_micro=1_500_000)
    assert at_cap.amount_micro == 0 and at_cap.created  # recorded, nothing granted
    assert _state(conn, account) == (1_500_000, 0, 1_500_000)
    with pytest.raises(credits.IdempotencyConflictError):
        credits.consume(conn, account, 1, "alloc:2026-02")


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c, a: credits.reserve(c, a, "op", 1.5, _later()), "amount_micro"),
        (lambda c, a: credits.reserve(c, a, "op", True, _later()), "amount_micro"),
        (lambda c, a: credits.reserve(c, a, "op", 0, _later()), "amount_micro"),
        (lambda c, a: credits.reserve(c, a, "", 5, _later()), "operation_id"),
        (lambda c, a: credits.reserve(c, a, "op", 5, datetime(2030, 1, 1)), "expires_at"),
        (lambda c, a: credits.reserve(c, a, "op", 5, datetime.now(UTC) - timedelta(seconds=1)), "expires_at"),
        (lambda c, a: credits.reserve(c, a + 999, "op", 5, _later()), "account_id"),
        (lambda c, a: credits.reserve(c, str(a), "op", 5, _later()), "account_id"),
        (lambda c, a: credits.consume(c, a, -5, "k"), "amount_micro"),
        (lambda c, a: credits.consume(c, a, 5, "k", kind="allocation"), "kind"),
        (lambda c, a: credits.allocate(c, a, 5, "k", cap_micro=-1), "cap_micro"),
        (lambda c, a: credits.allocate(c, a, 5, "x" * 201), "idempotency_key"),
        (lambda c, a: credits.post(c, a, "allocation", -5, "k"), "amount_micro"),
        (lambda c, a: credits.post(c, a, "hold_commit", -5, "k"), "kind"),
    ],
)
def test_bad_arguments_name_the_field_and_change_nothing(
    conn: psycopg.Connection, account: int, call: object, field: str
) -> None:
    before = snapshot(conn)
    with pytest.raises(InvalidInputError) as info:
        call(conn, account)  # type: ignore[operator]
    assert info.value.field == field
    assert snapshot(conn) == before


def test_subscription_accounts(conn: psycopg.Connection) -> None:
    credits.create_user(conn, "u2")
    subscription = credits.subscribe(conn, "u2", "sec", "starter", T0)
    assert credits.subscribe(conn, "u2", "sec", "starter", T0) == subscription
    account = credits.open_subscription_account(conn, subscription)
    assert credits.open_subscription_account(conn, subscription).id == account.id
    assert (account.graph_id, account.subscription_id) == (None, subscription)
    with pytest.raises(InvalidInputError) as info:
        credits.subscribe(conn, "u2", "sec", "platinum", T0)
    assert info.value.field == "plan"


def test_api_keys_verify_only_while_valid(conn: psycopg.Connection, account: int) -> None:
    issued = credits.issue_api_key(conn, "u1", "laptop")
    assert issued.key.startswith(issued.prefix + "_") and len(issued.key) == 3 + 8 + 1 + 43
    verified = credits.verify_api_key(conn, issued.key)
    assert verified is not None and verified.user_id == "u1" and verified.prefix == issued.prefix
    used = conn.execute("SELECT last_used_at FROM api_keys WHERE id = %s", (issued.id,)).fetchone()[0]
    assert used is not None
    tampered = issued.key[:-1] + ("A" if issued.key[-1] != "A" else "B")
    for wrong in (tampered, issued.prefix, "", None, 42, issued.key + "x", "bl_aaaaaaaa_" + "x" * 43):
        assert credits.verify_api_key(conn, wrong) is None
    credits.revoke_api_key(conn, issued.id)
    first_revocation = credits.revoke_api_key(conn, issued.id).revoked_at
    assert credits.revoke_api_key(conn, issued.id).revoked_at == first_revocation
    assert credits.verify_api_key(conn, issued.key) is None
    expiring = credits.issue_api_key(conn, "u1", "ci", expires_at=_later(1))
    assert credits.verify_api_key(conn, expiring.key) is not None
    conn.execute(
        "UPDATE api_keys SET created_at = now() - interval '2 days', "
        "expires_at = now() - interval '1 s' WHERE id = %s",
        (expiring.id,),
    )
    assert credits.verify_api_key(conn, expiring.key) is None
    deactivated = credits.issue_api_key(conn, "u1", "old")
    conn.execute("UPDATE api_keys SET deactivated_at = now() WHERE id = %s", (deactivated.id,))
    assert credits.verify_api_key(conn, deactivated.key) is None
    with pytest.raises(InvalidInputError) as info:
        credits.issue_api_key(conn, "nobody", "x")
    assert info.value.field == "user_id"
