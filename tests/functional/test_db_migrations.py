"""Schema migrations on a real PostgreSQL: applied once, in order, by one of many
concurrent migrators; an edited migration is refused; the CLI and the deploy-time
Lambda apply them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import db_migrate
from beatless.db import MigrationError, current_version, load_migrations, migrate
from beatless.db.migrate import Migration
from beatless.errors import InvalidInputError
from tests.support.lambda_context import FakeLambdaContext

REPO = Path(__file__).resolve().parents[2]
LATEST = load_migrations()[-1].version


@pytest.fixture
def conn(postgres_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        yield connection


def _tables(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_first_migration_creates_the_schema_and_records_it(conn: psycopg.Connection) -> None:
    assert current_version(conn) is None
    result = migrate(conn)
    assert result.applied == tuple(m.version for m in load_migrations())
    assert result.version == LATEST
    assert {
        "schema_migrations", "tiers", "users", "graphs", "graph_tier_history", "repository_subscriptions",
        "credit_accounts", "credit_ledger", "credit_reservations", "api_keys", "user_sessions",
        "storage_usage_snapshots", "storage_charges", "monthly_allocations", "monthly_usage_summaries",
        "credit_transactions", "transaction_kinds",
    } <= _tables(conn)  # fmt: skip
    recorded = conn.execute(
        "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
    ).fetchall()
    assert recorded == [(m.version, m.name, m.checksum) for m in load_migrations()]


def test_applying_twice_changes_nothing(conn: psycopg.Connection) -> None:
    migrate(conn)
    before = conn.execute("SELECT version, applied_at FROM schema_migrations ORDER BY version").fetchall()
    again = migrate(conn)
    assert again.applied == ()
    assert again.version == LATEST
    assert (
        conn.execute("SELECT version, applied_at FROM schema_migrations ORDER BY version").fetchall()
        == before
    )


def test_an_edited_migration_is_refused_and_nothing_more_is_applied(conn: psycopg.Connection) -> None:
    migrate(conn)
    shipped = list(load_migrations())
    edited = Migration(shipped[0].version, shipped[0].name, shipped[0].sql + "\n-- edited", "0" * 64)
    extra = Migration("9998", "later", "CREATE TABLE later_table (id int)", "1" * 64)
    with pytest.raises(MigrationError, match=f"migration {shipped[0].label} was applied with checksum"):
        migrate(conn, [edited, *shipped[1:], extra])
    assert "later_table" not in _tables(conn)


def test_new_migrations_apply_in_order_each_in_its_own_transaction(conn: psycopg.Connection) -> None:
    migrate(conn)
    shipped = list(load_migrations())
    good = Migration("9001", "good", "CREATE TABLE good_one (id int)", "a" * 64)
    bad = Migration("9002", "bad", "CREATE TABLE bad_one (id int); SELECT 1/0", "b" * 64)
    after = Migration("9003", "after", "CREATE TABLE after_bad (id int)", "c" * 64)
    with pytest.raises(psycopg.errors.DivisionByZero):
        migrate(conn, [*shipped, good, bad, after])
    tables = _tables(conn)
    assert "good_one" in tables  # committed before the failure
    assert "bad_one" not in tables and "after_bad" not in tables  # rolled back / never started
    assert current_version(conn) == "9001"


def test_a_database_ahead_of_the_code_is_accepted_but_a_gap_is_not(conn: psycopg.Connection) -> None:
    shipped = list(load_migrations())
    newer = Migration("9500", "newer", "CREATE TABLE from_newer_release (id int)", "d" * 64)
    migrate(conn, [*shipped, newer])
    # The previous release (a rollback) sees 9500 above everything it knows: fine.
    result = migrate(conn, shipped)
    assert result.ahead == ("9500",) and result.applied == ()
    # Code that knows 9600 but not 9500 below it misses a migration: refused.
    with pytest.raises(MigrationError, match="9500"):
        migrate(conn, [*shipped, Migration("9600", "x", "SELECT 1", "e" * 64)])


def test_sixteen_concurrent_migrators_apply_each_migration_once(postgres_dsn: str) -> None:
    results: list[object] = []
    barrier = threading.Barrier(16)

    def one() -> None:
        with psycopg.connect(postgres_dsn, autocommit=True) as connection:
            barrier.wait()
            try:
                results.append(migrate(connection))
            except Exception as error:  # collected and asserted below
                results.append(error)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors
    applied = [v for r in results for v in r.applied]  # type: ignore[attr-defined]
    assert sorted(applied) == [m.version for m in load_migrations()]  # each exactly once, by someone
    with psycopg.connect(postgres_dsn) as connection:
        assert connection.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(applied)


def test_migrate_refuses_a_connection_inside_a_transaction(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as connection:  # not autocommit
        connection.execute("SELECT 1")
        with pytest.raises(MigrationError, match="not inside a transaction"):
            migrate(connection)


def test_cli_applies_migrations_with_one_command(postgres_dsn: str) -> None:
    command = [str(Path(sys.executable).with_name("beatless")), "db", "migrate", "--dsn", postgres_dsn]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    assert f"applied {', '.join(m.version for m in load_migrations())}" in first.stdout
    second = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    assert "applied nothing (already up to date)" in second.stdout
    with psycopg.connect(postgres_dsn) as connection:
        assert current_version(connection) == LATEST


def test_cli_without_a_database_names_the_variable() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    command = [str(Path(sys.executable).with_name("beatless")), "db", "migrate"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr


def _cfn_event(request: str) -> dict[str, object]:
    return {
        "RequestType": request,
        "ServiceToken": "arn:aws:lambda:us-east-1:111122223333:function:provider",
        "ResponseURL": "https://example.invalid/response",
        "StackId": "arn:aws:cloudformation:us-east-1:111122223333:stack/beatless-data/1",
        "RequestId": "r-1",
        "LogicalResourceId": "SchemaMigration",
        "ResourceType": "Custom::SchemaMigration",
        "ResourceProperties": {"ServiceToken": "arn:...", "MigrationsHash": "abc"},
    }


def test_deploy_lambda_creates_then_updates_then_keeps_the_schema_on_delete(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_SECRET_ARN", raising=False)
    monkeypatch.setenv("DATABASE_URL", postgres_dsn)
    context = FakeLambdaContext(function_name="db_migrate")
    created = db_migrate.handler(_cfn_event("Create"), context)
    versions = [m.version for m in load_migrations()]
    assert created == {
        "PhysicalResourceId": "beatless-schema",
        "Data": {"Version": LATEST, "Applied": ",".join(versions)},
    }
    updated = db_migrate.handler(_cfn_event("Update"), context)
    assert updated == {"PhysicalResourceId": "beatless-schema", "Data": {"Version": LATEST, "Applied": ""}}
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute("INSERT INTO users (id) VALUES ('kept')")
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")  # Delete must not connect
    assert db_migrate.handler(_cfn_event("Delete"), context) == {"PhysicalResourceId": "beatless-schema"}
    with psycopg.connect(postgres_dsn) as connection:
        assert connection.execute("SELECT id FROM users").fetchall() == [("kept",)]
        assert current_version(connection) == LATEST
    json.dumps(created)  # the Provider framework serializes the response


@pytest.mark.parametrize("event", [{"RequestType": "Replace"}, {}, ["Create"]])
def test_deploy_lambda_rejects_an_unknown_request_type(event: object) -> None:
    with pytest.raises(InvalidInputError, match="RequestType"):
        db_migrate.handler(event, FakeLambdaContext(function_name="db_migrate"))


def test_deploy_lambda_raises_when_the_database_cannot_be_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_SECRET_ARN", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("DATABASE_CONNECT_TIMEOUT_SECONDS", "2")
    with pytest.raises(psycopg.OperationalError):
        db_migrate.handler(_cfn_event("Create"), FakeLambdaContext(function_name="db_migrate"))
