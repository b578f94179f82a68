"""Connections with DATABASE_SECRET_ARN against a PostgreSQL that asks for a
password (SCRAM) over TLS: the secret is fetched once and again after a rotation,
the server certificate is verified (never silently accepted), and the job runs
end to end this way without a password in its output.

The server is this module's own: TLS with a certificate from a throwaway CA and
scram-sha-256 for the application role; Secrets Manager is moto (in-process).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import psycopg
import pytest

import credit_reservation_cleanup
from beatless import credits
from beatless.db import Database, DatabaseSettings, SecretCredentials, migrate
from beatless.jobs.resources import reset_resources
from beatless.local.servers import PostgresServer
from tests.support.lambda_context import FakeLambdaContext


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostgresServer, Path]]:
    certs = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test CA",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=certs)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=certs)  # fmt: skip
    (certs / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=certs)  # fmt: skip
    with PostgresServer() as server:
        with psycopg.connect(server.dsn, autocommit=True) as admin:
            admin.execute("SET password_encryption = 'scram-sha-256'")
            admin.execute("CREATE ROLE app LOGIN PASSWORD 'first-password'")
            admin.execute("CREATE DATABASE beatless OWNER app")
        for name in ("server.crt", "server.key"):
            shutil.copy(certs / name, server.data / name)
            shutil.chown(server.data / name, "postgres", "postgres")
        (server.data / "server.key").chmod(0o600)
        with (server.data / "postgresql.conf").open("a") as conf:
            conf.write("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
        (server.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            "hostssl all app 127.0.0.1/32 scram-sha-256\n"
        )
        server._run([str(server.bindir / "pg_ctl"), "-D", str(server.data), "-w", "restart",
                     "-l", str(server.base / "postgres.log")])  # fmt: skip
        with psycopg.connect(server.dsn_for("beatless"), autocommit=True) as admin:
            migrate(admin)
            admin.execute("GRANT ALL ON ALL TABLES IN SCHEMA public TO app")
            admin.execute("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO app")
        yield server, certs / "ca.crt"


@pytest.fixture
def secret(tls_server: tuple[PostgresServer, Path], aws_inprocess: None) -> Iterator[str]:
    server, _ = tls_server
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute("ALTER ROLE app PASSWORD 'first-password'")
    value = {"engine": "postgres", "host": "127.0.0.1", "port": server.port, "username": "app",
             "password": "first-password", "dbname": "beatless"}  # fmt: skip
    client = boto3.client("secretsmanager")
    arn = client.create_secret(Name="beatless/db", SecretString=json.dumps(value))["ARN"]
    yield arn


def _database(arn: str, ca: Path, **env: str) -> Database:
    settings = DatabaseSettings.from_env({"DATABASE_SECRET_ARN": arn, "DATABASE_SSLROOTCERT": str(ca), **env})
    return Database(settings, SecretCredentials(boto3.client("secretsmanager"), arn))


def _rotate(server: PostgresServer, arn: str, password: str) -> None:
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute(f"ALTER ROLE app PASSWORD '{password}'")
    current = json.loads(boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"])
    boto3.client("secretsmanager").put_secret_value(
        SecretId=arn, SecretString=json.dumps({**current, "password": password})
    )


def test_the_secret_is_fetched_once_and_again_after_a_rotation(
    tls_server: tuple[PostgresServer, Path], secret: str
) -> None:
    server, ca = tls_server
    database = _database(secret, ca)
    assert database.settings.sslmode == "verify-full"
    for _ in range(2):
        with database.connect("test") as conn:
            user, ssl = conn.execute(
                "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            ).fetchone()
            assert (user, ssl) == ("app", True)
    assert database.credentials is not None and database.credentials.fetches == 1  # cached
    _rotate(server, secret, "second-password")
    with database.connect("test") as conn:  # the cached password is refused once, then refetched
        assert conn.execute("SELECT current_user").fetchone()[0] == "app"
    assert database.credentials.fetches == 2


def test_a_password_refused_twice_raises_after_one_refetch(
    tls_server: tuple[PostgresServer, Path], secret: str
) -> None:
    server, ca = tls_server
    database = _database(secret, ca)
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute("ALTER ROLE app PASSWORD 'nobody-knows'")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed") as info:
        database.connect("test")
    assert "first-password" not in str(info.value)
    assert database.credentials is not None and database.credentials.fetches == 2


def test_a_certificate_that_does_not_verify_is_refused(
    tls_server: tuple[PostgresServer, Path], secret: str
) -> None:
    database = _database(secret, Path("/nonexistent"), DATABASE_SSLROOTCERT="system")
    assert database.settings.sslrootcert == "system"  # the public trust store: our test CA is not in it
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        database.connect("test")


def test_the_job_runs_with_the_secret_and_prints_no_password(
    tls_server: tuple[PostgresServer, Path],
    secret: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, ca = tls_server
    t = datetime(2026, 11, 23, 9, 15, tzinfo=UTC)
    with psycopg.connect(server.dsn_for("beatless"), autocommit=True) as admin:
        credits.create_user(admin, "owner")
        credits.create_graph(admin, "tls", "owner", "standard", t - timedelta(days=30))
        account = credits.open_graph_account(admin, "tls").id
        credits.allocate(admin, account, 10**6, "seed:tls")
        admin.execute(
            "INSERT INTO credit_reservations "
            "(account_id, operation_id, amount_micro, created_at, expires_at) "
            "VALUES (%s, 'due', 400, %s, %s)",
            (account, t - timedelta(hours=1), t),
        )
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_SECRET_ARN", secret)
    monkeypatch.setenv("DATABASE_SSLROOTCERT", str(ca))
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "credit_reservation_cleanup")
    reset_resources()
    try:
        summary = credit_reservation_cleanup.handler(
            {"scheduled_time": "2026-11-23T09:15:00Z"}, FakeLambdaContext()
        )
    finally:
        reset_resources()
    assert summary["counts"] == {"released": 1, "released_micro": 400}
    output = capsys.readouterr()
    assert "first-password" not in output.out + output.err + json.dumps(summary)
