"""Property-based tests (hypothesis) of the money arithmetic on a real PostgreSQL:
holds never drive the available balance negative, allocation is idempotent,
charges sum exactly, and any interleaving of reserve/commit/release/consume/
allocate keeps the database equal to a simple model and to its own ledger.

Each example works on a fresh account of one module-wide database (accounts are
independent), so no example sees another's state. Example counts stay modest.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from beatless import credits
from beatless.local.servers import PostgresServer
from tests.support.database import migrated_database

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_names = itertools.count()


@pytest.fixture(scope="module")
def conn(postgres_server: PostgresServer) -> Iterator[psycopg.Connection]:
    with migrated_database(postgres_server) as dsn, psycopg.connect(dsn, autocommit=True) as connection:
        credits.create_user(connection, "owner")
        yield connection


def fresh_account(conn: psycopg.Connection, balance: int = 0) -> int:
    name = f"g{next(_names)}"
    credits.create_graph(conn, name, "owner", "standard", datetime(2026, 1, 1, tzinfo=UTC))
    account = credits.open_graph_account(conn, name).id
    if balance:
        credits.allocate(conn, account, balance, f"seed:{name}")
    return account


def later() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


amounts = st.integers(min_value=1, max_value=5_000_000)


@PROPERTY
@given(balance=st.integers(min_value=0, max_value=10_000_000), asks=st.lists(amounts, max_size=12))
def test_holds_never_drive_the_available_balance_negative(
    conn: psycopg.Connection, balance: int, asks: list[int]
) -> None:
    account = fresh_account(conn, balance)
    available = balance
    for i, amount in enumerate(asks):
        if amount <= available:
            credits.reserve(conn, account, f"op{i}", amount, later())
            available -= amount
        else:
            with pytest.raises(credits.InsufficientCreditsError):
                credits.reserve(conn, account, f"op{i}", amount, later())
        state = credits.get_account(conn, account)
        assert state.available_micro == available >= 0
        assert state.balance_micro == balance


@PROPERTY
@given(
    start=st.integers(min_value=0, max_value=3_000_000),
    cap=st.none() | st.integers(min_value=0, max_value=5_000_000),
    calls=st.lists(st.tuples(st.sampled_from(["2026-01", "2026-02", "2026-03"]), amounts), max_size=10),
)
def test_allocation_is_idempotent_and_capped(
    conn: psycopg.Connection, start: int, cap: int | None, calls: list[tuple[str, int]]
) -> None:
    account = fresh_account(conn, start)
    balance = start
    granted: dict[str, int] = {}
    for month, amount in calls:
        entry = credits.allocate(conn, account, amount, f"alloc:{account}:{month}", cap_micro=cap)
        if month in granted:  # a replay, whatever amount it asks: the first grant stands
            assert not entry.created and entry.amount_micro == granted[month]
        else:
            expected = amount if cap is None else max(0, min(amount, cap - balance))
            assert entry.created and entry.amount_micro == expected
            granted[month] = expected
            balance += expected
        assert credits.get_account(conn, account).balance_micro == balance
        if cap is not None and start <= cap:
            assert balance <= cap
    assert credits.ledger_sum(conn, account) == balance


@PROPERTY
@given(charges=st.lists(st.integers(min_value=1, max_value=10**12), max_size=15))
def test_charges_sum_exactly(conn: psycopg.Connection, charges: list[int]) -> None:
    account = fresh_account(conn, 10**9)
    for i, amount in enumerate(charges):
        credits.consume(
            conn, account, amount, f"storage:{account}:{i}", kind="storage_charge", allow_negative=True
        )
        credits.consume(
            conn, account, amount, f"storage:{account}:{i}", kind="storage_charge", allow_negative=True
        )
    expected = 10**9 - sum(charges)  # each charge once, to the micro-credit, even far below zero
    assert credits.get_account(conn, account).balance_micro == expected
    assert credits.ledger_sum(conn, account) == expected
    assert credits.to_credits(expected) == credits.to_credits(10**9) - sum(
        credits.to_credits(c) for c in charges
    )


class CreditMachine(RuleBasedStateMachine):
    """Random interleavings of every balance-changing call against a model."""

    conn: psycopg.Connection

    @initialize(balance=st.integers(min_value=0, max_value=2_000_000))
    def open(self, balance: int) -> None:
        self.account = fresh_account(self.conn, balance)
        self.balance = balance
        self.holds: dict[str, tuple[int, str, int]] = {}  # op -> (amount, status, consumed)
        self.keys: dict[str, int] = {}  # ledger key -> signed amount posted

    def held(self) -> int:
        return sum(amount for amount, status, _ in self.holds.values() if status == "held")

    @rule(
        op=st.sampled_from([f"op{i}" for i in range(6)]), amount=st.integers(min_value=1, max_value=900_000)
    )
    def reserve(self, op: str, amount: int) -> None:
        if op in self.holds:
            same = self.holds[op][0] == amount
            if same:
                assert credits.reserve(self.conn, self.account, op, amount, later()).id
            else:
                with pytest.raises(credits.IdempotencyConflictError):
                    credits.reserve(self.conn, self.account, op, amount, later())
        elif amount <= self.balance - self.held():
            credits.reserve(self.conn, self.account, op, amount, later())
            self.holds[op] = (amount, "held", 0)
        else:
            with pytest.raises(credits.InsufficientCreditsError):
                credits.reserve(self.conn, self.account, op, amount, later())

    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        held = sorted(op for op, (_, status, _) in self.holds.items() if status == "held")
        if not held:
            return
        op = data.draw(st.sampled_from(held))
        amount = self.holds[op][0]
        consumed = data.draw(st.integers(min_value=0, max_value=amount))
        credits.commit(self.conn, self.account, op, consumed)
        credits.commit(self.conn, self.account, op, consumed)  # a replay changes nothing
        self.holds[op] = (amount, "committed", consumed)
        self.balance -= consumed

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        if not self.holds:
            return
        op = data.draw(st.sampled_from(sorted(self.holds)))
        amount, status, consumed = self.holds[op]
        assert credits.release(self.conn, self.account, op).status == (
            "released" if status == "held" else status
        )
        if status == "held":
            self.holds[op] = (amount, "released", consumed)

    @rule(
        key=st.sampled_from([f"c{i}" for i in range(5)]), amount=st.integers(min_value=1, max_value=900_000)
    )
    def consume(self, key: str, amount: int) -> None:
        full = f"consume:{self.account}:{key}"
        if full in self.keys:
            if self.keys[full] == -amount:
                assert not credits.consume(self.conn, self.account, amount, full).created
            else:
                with pytest.raises(credits.IdempotencyConflictError):
                    credits.consume(self.conn, self.account, amount, full)
        elif amount <= self.balance - self.held():
            credits.consume(self.conn, self.account, amount, full)
            self.keys[full] = -amount
            self.balance -= amount
        else:
            with pytest.raises(credits.InsufficientCreditsError):
                credits.consume(self.conn, self.account, amount, full)

    @rule(
        key=st.sampled_from([f"m{i}" for i in range(4)]),
        amount=st.integers(min_value=0, max_value=900_000),
        cap=st.none() | st.integers(min_value=0, max_value=3_000_000),
    )
    def allocate(self, key: str, amount: int, cap: int | None) -> None:
        full = f"allocate:{self.account}:{key}"
        entry = credits.allocate(self.conn, self.account, amount, full, cap_micro=cap)
        if full in self.keys:
            assert not entry.created and entry.amount_micro == self.keys[full]
        else:
            expected = amount if cap is None else max(0, min(amount, cap - self.balance))
            assert entry.amount_micro == expected
            self.keys[full] = expected
            self.balance += expected

    @invariant()
    def database_matches_model_and_ledger(self) -> None:
        if not hasattr(self, "account"):
            return
        state = credits.get_account(self.conn, self.account)
        assert (state.balance_micro, state.held_micro) == (self.balance, self.held())
        assert state.available_micro >= 0  # nothing here may overdraw (no allow_negative)
        assert credits.ledger_sum(self.conn, self.account) == self.balance
        statuses = dict(
            self.conn.execute(
                "SELECT operation_id, status FROM credit_reservations WHERE account_id = %s", (self.account,)
            ).fetchall()
        )
        assert statuses == {op: status for op, (_, status, _) in self.holds.items()}


def test_any_interleaving_keeps_balances_equal_to_the_ledger(conn: psycopg.Connection) -> None:
    CreditMachine.conn = conn
    run_state_machine_as_test(
        CreditMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    assert credits.mismatches(conn) == []
