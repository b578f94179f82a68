"""`beatless db migrate` then `beatless job <name>` run a job on a laptop database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg

from beatless.credits import allocate, create_graph, create_user, open_graph_account, reserve
from beatless.db import migrate


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beatless.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_migrate_then_run_a_job_from_the_command_line(postgres_dsn: str) -> None:

    env = {**os.environ, "DATABASE_URL": postgres_dsn}
    env.pop("AWS_LAMBDA_FUNCTION_NAME", None)
    migrated = _cli("db", "migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        migrate(conn)  # already applied: a no-op
        create_user(conn, "u-cli")
        create_graph(conn, "g-cli", "u-cli", "standard", datetime(2025, 1, 1, tzinfo=UTC))
        account = open_graph_account(conn, "g-cli")
        allocate(conn, account.id, 5_000_000, "seed")
        expires = datetime.now(UTC) + timedelta(seconds=1)
        reserve(conn, account.id, "op-1", 1_000_000, expires)
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.05)  # the hold's time is up

    dry = _cli("job", "credit_reservation_cleanup", "--event", json.dumps({"dry_run": True}), env=env)
    assert dry.returncode == 0, dry.stderr
    assert '"dry_run": true' in dry.stdout
    real = _cli("job", "credit_reservation_cleanup", env=env)  # no event: as of now
    assert real.returncode == 0, real.stderr
    with psycopg.connect(postgres_dsn) as conn:
        status = conn.execute("SELECT status FROM credit_reservations").fetchone()
    assert status == ("expired",)


def test_a_bad_job_event_is_refused_naming_the_field(postgres_dsn: str) -> None:
    env = {**os.environ, "DATABASE_URL": postgres_dsn}
    bad = _cli("job", "credit_reservation_cleanup", "--event", "{not json", env=env)
    assert bad.returncode == 2
    assert "--event" in bad.stderr
