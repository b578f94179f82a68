"""auth_cleanup on a real PostgreSQL, through its handler: ended API keys
deactivated once and deleted after the retention, old sessions deleted, at the
exact boundaries; revoked-then-expired keys; dry runs, replays, a future tick,
16 concurrent runs, a killed connection, a run out of time, console and
malformed events."""

from __future__ import annotations

import base64
import functools
import hashlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import auth_cleanup
from beatless import credits
from beatless.auth.cleanup import AuthCleanupSettings, clean_up_auth
from beatless.errors import InvalidInputError
from tests.support.database import snapshot
from tests.support.jobs import (
    US,
    context,
    emf_documents,
    iso,
    kill_when_blocked,
    run_concurrently,
    run_on_runtime,
    tick,
)
from tests.support.lambda_context import FakeLambdaContext

JOB = "auth_cleanup"
EVENTS = Path(__file__).resolve().parents[2] / "events" / JOB
T = datetime.fromisoformat("2026-03-10T10:00:00+00:00")  # an hourly tick, in the past
DAY = timedelta(days=1)
KEY_RETENTION = 90 * DAY
SESSION_RETENTION = 7 * DAY
_serial = iter(range(1, 10**9))


def run(event: Any, ctx: FakeLambdaContext | None = None) -> dict[str, Any]:
    return auth_cleanup.handler(event, ctx or context())


def run_core(chunk_size: int, ctx: Any = None, event: Any = None) -> dict[str, Any]:
    settings = AuthCleanupSettings(KEY_RETENTION, SESSION_RETENTION)
    work = functools.partial(clean_up_auth, settings=settings, chunk_size=chunk_size)
    return run_on_runtime(JOB, event or tick(T), ctx or context(), work)


def _prefix(n: int) -> str:
    return "bl_" + base64.b32encode(n.to_bytes(5, "big")).decode().lower()


def key(
    conn: psycopg.Connection,
    name: str,
    *,
    expires: datetime | None = None,
    revoked: datetime | None = None,
    deactivated: datetime | None = None,
    created: datetime | None = None,
) -> int:
    """An API key row as the API would have left it (created well before it ended)."""
    credits.create_user(conn, "u1")
    n = next(_serial)
    row = conn.execute(
        "INSERT INTO api_keys (user_id, name, prefix, digest, created_at, expires_at, revoked_at, "
        "deactivated_at) VALUES ('u1', %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            name,
            _prefix(n),
            hashlib.sha256(f"key-{n}".encode()).digest(),
            created or T - 400 * DAY,
            expires,
            revoked,
            deactivated,
        ),
    ).fetchone()
    return int(row[0])


def session(conn: psycopg.Connection, *, expires: datetime, revoked: datetime | None = None) -> int:
    credits.create_user(conn, "u1")
    n = next(_serial)
    row = conn.execute(
        "INSERT INTO user_sessions (user_id, token_digest, created_at, expires_at, revoked_at) "
        "VALUES ('u1', %s, %s, %s, %s) RETURNING id",
        (hashlib.sha256(f"session-{n}".encode()).digest(), expires - 30 * DAY, expires, revoked),
    ).fetchone()
    return int(row[0])


def many(conn: psycopg.Connection, keys: int, sessions: int) -> None:
    """`keys` ended keys (a third revoked, a third long past the retention) and
    `sessions` sessions ended past their retention, in bulk."""
    credits.create_user(conn, "u1")
    with conn.cursor().copy(
        "COPY api_keys (user_id, name, prefix, digest, created_at, expires_at, revoked_at) FROM STDIN"
    ) as copy:
        for i in range(keys):
            n = next(_serial)
            ended = T - (200 * DAY if i % 3 == 0 else timedelta(minutes=i))
            copy.write_row(
                (
                    "u1",
                    f"bulk-{i}",
                    _prefix(n),
                    hashlib.sha256(f"key-{n}".encode()).digest(),
                    T - 400 * DAY,
                    ended if i % 3 != 1 else None,
                    ended if i % 3 == 1 else None,
                )
            )
    with conn.cursor().copy(
        "COPY user_sessions (user_id, token_digest, created_at, expires_at) FROM STDIN"
    ) as copy:
        for i in range(sessions):
            n = next(_serial)
            expires = T - SESSION_RETENTION - timedelta(minutes=i)
            copy.write_row(("u1", hashlib.sha256(f"session-{n}".encode()).digest(), T - 400 * DAY, expires))


def state(conn: psycopg.Connection, key_id: int) -> str:
    row = conn.execute("SELECT deactivated_at FROM api_keys WHERE id = %s", (key_id,)).fetchone()
    return "deleted" if row is None else ("active" if row[0] is None else "deactivated")


def deactivated_at(conn: psycopg.Connection, key_id: int) -> datetime:
    return conn.execute("SELECT deactivated_at FROM api_keys WHERE id = %s", (key_id,)).fetchone()[0]


def session_exists(conn: psycopg.Connection, session_id: int) -> bool:
    return conn.execute("SELECT 1 FROM user_sessions WHERE id = %s", (session_id,)).fetchone() is not None


def counts(conn: psycopg.Connection) -> tuple[int, int, int]:
    """(active keys, deactivated keys, sessions)."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE deactivated_at IS NULL), count(*) FILTER (WHERE deactivated_at "
        "IS NOT NULL), (SELECT count(*) FROM user_sessions) FROM api_keys"
    ).fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def test_keys_and_sessions_are_cleaned_up_at_their_exact_boundaries(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    forever = key(conn, "never expires")
    future = key(conn, "expires next year", expires=T + 365 * DAY)
    at_boundary = key(conn, "expires exactly now", expires=T)
    one_us_later = key(conn, "expires a microsecond later", expires=T + US)
    revoked = key(conn, "revoked an hour ago", revoked=T - timedelta(hours=1))
    revoked_then_expired = key(conn, "revoked, expiring later", revoked=T - DAY, expires=T + 30 * DAY)
    ancient = key(conn, "expired 100 days ago, never cleaned", expires=T - 100 * DAY)
    retention_boundary = key(
        conn, "ended exactly 90 days ago", expires=T - KEY_RETENTION, deactivated=T - KEY_RETENTION
    )
    inside_retention = key(
        conn, "ended 90 days ago less 1 us", revoked=T - KEY_RETENTION + US, deactivated=T - 80 * DAY
    )
    live_session = session(conn, expires=T + DAY)
    recently_expired = session(conn, expires=T - DAY)
    session_at_boundary = session(conn, expires=T - SESSION_RETENTION)
    session_inside = session(conn, expires=T - SESSION_RETENTION + US)
    revoked_session = session(conn, expires=T + DAY, revoked=T - 8 * DAY)
    capsys.readouterr()

    summary = run(tick(T))

    assert summary["counts"] == {"deactivated_keys": 4, "deleted_keys": 2, "deleted_sessions": 2}
    assert summary["remaining"] == 0 and summary["complete"] is True
    assert summary["as_of"] == iso(T)
    assert summary["api_keys_ended_before"] == iso(T - KEY_RETENTION)
    assert summary["sessions_ended_before"] == iso(T - SESSION_RETENTION)
    assert [state(conn, k) for k in (forever, future, one_us_later)] == ["active"] * 3
    assert [state(conn, k) for k in (at_boundary, revoked, revoked_then_expired)] == ["deactivated"] * 3
    # Never cleaned before (the first run after an outage): deactivated, then deleted in the same run.
    assert state(conn, ancient) == "deleted"
    assert state(conn, retention_boundary) == "deleted"
    assert state(conn, inside_retention) == "deactivated"
    assert deactivated_at(conn, inside_retention) == T - 80 * DAY  # untouched
    assert [session_exists(conn, s) for s in (live_session, recently_expired, session_inside)] == [True] * 3
    assert not session_exists(conn, session_at_boundary) and not session_exists(conn, revoked_session)

    (document,) = emf_documents(capsys.readouterr().out)
    assert document["Job"] == JOB and document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Job"]]
    assert (document["DeactivatedKeys"], document["DeletedKeys"], document["DeletedSessions"]) == (
        [4],
        [2],
        [2],
    )
    assert (document["Remaining"], document["JobSucceeded"]) == ([0], [1])


def test_a_revoked_then_expired_key_is_deactivated_once_and_deleted_once(conn: psycopg.Connection) -> None:
    k = key(conn, "revoked, then expired", revoked=T, expires=T + 10 * DAY)
    assert run(tick(T))["counts"]["deactivated_keys"] == 1
    first = deactivated_at(conn, k)
    at_expiry = run(tick(T + 10 * DAY))  # its expiry changes nothing: it ended at the revocation
    assert at_expiry["counts"] == {"deactivated_keys": 0, "deleted_keys": 0, "deleted_sessions": 0}
    assert deactivated_at(conn, k) == first
    just_before = run(tick(T + KEY_RETENTION - timedelta(hours=1)))
    assert just_before["counts"]["deleted_keys"] == 0 and state(conn, k) == "deactivated"
    assert run(tick(T + KEY_RETENTION))["counts"]["deleted_keys"] == 1
    assert state(conn, k) == "deleted"
    assert run(tick(T + KEY_RETENTION + timedelta(hours=1)))["counts"]["deleted_keys"] == 0


def test_a_deactivated_key_is_refused_by_the_api(conn: psycopg.Connection) -> None:
    credits.create_user(conn, "u1")
    issued = credits.issue_api_key(conn, "u1", "soon revoked")
    credits.revoke_api_key(conn, issued.id)
    now = conn.execute("SELECT now()").fetchone()[0]
    assert run(tick(now))["counts"]["deactivated_keys"] == 1
    assert credits.verify_api_key(conn, issued.key) is None


def test_first_run_ever_on_an_empty_database(conn: psycopg.Connection) -> None:
    summary = run(tick(T))
    assert summary["counts"] == {"deactivated_keys": 0, "deleted_keys": 0, "deleted_sessions": 0}
    assert summary["complete"] is True


def test_a_future_scheduled_time_cannot_end_a_key_early(conn: psycopg.Connection) -> None:
    now = conn.execute("SELECT now()").fetchone()[0]
    k = key(conn, "expires in an hour", expires=now + timedelta(hours=1), created=now - DAY)
    s = session(conn, expires=now + timedelta(hours=1))
    summary = run(tick(now + 30 * DAY))
    assert summary["counts"] == {"deactivated_keys": 0, "deleted_keys": 0, "deleted_sessions": 0}
    assert state(conn, k) == "active" and session_exists(conn, s)


def test_the_retentions_come_from_the_environment(
    conn: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    k = key(conn, "expired two days ago", expires=T - 2 * DAY)
    s = session(conn, expires=T - 2 * DAY)
    monkeypatch.setenv("AUTH_API_KEY_RETENTION_DAYS", "0")  # delete in the run that deactivates
    monkeypatch.setenv("AUTH_SESSION_RETENTION_DAYS", "1")
    summary = run(tick(T))
    assert summary["counts"] == {"deactivated_keys": 1, "deleted_keys": 1, "deleted_sessions": 1}
    assert state(conn, k) == "deleted" and not session_exists(conn, s)
    for name, value in (("AUTH_API_KEY_RETENTION_DAYS", "-1"), ("AUTH_SESSION_RETENTION_DAYS", "week")):
        monkeypatch.setenv(name, value)
        with pytest.raises(InvalidInputError) as info:
            run(tick(T))
        assert info.value.field == name
        monkeypatch.delenv(name)


def test_a_dry_run_reports_and_changes_nothing(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    key(conn, "expired", expires=T - DAY)
    key(conn, "expired long ago", expires=T - 100 * DAY)  # would be deactivated, then deleted
    key(conn, "deactivated long ago", revoked=T - 95 * DAY, deactivated=T - 95 * DAY)
    key(conn, "active", expires=T + DAY)
    session(conn, expires=T - 10 * DAY)
    before = snapshot(conn)
    capsys.readouterr()
    summary = run(tick(T, dry_run=True))
    assert summary["dry_run"] is True and summary["counts"] == {}
    assert (summary["would_deactivate_keys"], summary["would_delete_keys"]) == (2, 2)
    assert summary["would_delete_sessions"] == 1 and summary["remaining"] == 5
    assert snapshot(conn) == before
    assert emf_documents(capsys.readouterr().out) == []


def test_replays_of_one_tick_have_one_effect_and_the_next_tick_its_own(conn: psycopg.Connection) -> None:
    for i in range(5):
        key(conn, f"ended-{i}", expires=T - timedelta(minutes=i))
    later = [key(conn, f"next-{i}", expires=T + timedelta(minutes=10 * (i + 1))) for i in range(3)]
    first = run(tick(T, execution_id="a", attempt_number="1"))
    after_first = snapshot(conn)
    replays = [run(tick(T, execution_id=e, attempt_number=n)) for e, n in (("b", "2"), ("c", "3"))]
    assert first["counts"]["deactivated_keys"] == 5
    assert [r["counts"]["deactivated_keys"] for r in replays] == [0, 0]
    assert snapshot(conn) == after_first
    assert run(tick(T + timedelta(hours=1)))["counts"]["deactivated_keys"] == 3
    assert [state(conn, k) for k in later] == ["deactivated"] * 3


def test_sixteen_simultaneous_runs_clean_up_every_key_and_session_once(conn: psycopg.Connection) -> None:
    many(conn, keys=3000, sessions=900)
    key(conn, "still valid", expires=T + DAY)

    def one(i: int) -> dict[str, Any]:
        return run(tick(T)) if i % 2 else run_core(chunk_size=100)

    summaries = run_concurrently(16, one)
    assert sum(s["counts"]["deactivated_keys"] for s in summaries) == 3000
    assert sum(s["counts"]["deleted_keys"] for s in summaries) == 1000  # the third ended 200 days ago
    assert sum(s["counts"]["deleted_sessions"] for s in summaries) == 900
    assert counts(conn) == (1, 2000, 0)


def test_a_connection_killed_inside_a_chunk_loses_only_that_chunk(
    conn: psycopg.Connection, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    many(conn, keys=900, sessions=0)
    # The key that ended last waits, inside the chunk's transaction, for a lock the
    # test holds (a trigger of this test's database; the job's code is untouched).
    key(conn, "gate", expires=T)
    conn.execute(
        "CREATE FUNCTION test_gate() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NEW; END $$"
    )
    conn.execute(
        "CREATE TRIGGER test_gate BEFORE UPDATE ON api_keys FOR EACH ROW "
        "WHEN (OLD.name = 'gate') EXECUTE FUNCTION test_gate()"
    )
    capsys.readouterr()
    error, release = kill_when_blocked(
        conn, dsn, JOB, "SELECT pg_advisory_xact_lock(4242)", (), lambda: run_core(chunk_size=100)
    )
    release()
    assert isinstance(error, psycopg.OperationalError)
    assert counts(conn)[1] == 900  # nine chunks committed; the tenth (the gate) rolled back
    assert state(conn, key_id("gate", conn)) == "active"
    (document,) = emf_documents(capsys.readouterr().out)
    assert document["DeactivatedKeys"] == [900] and "JobSucceeded" not in document

    again = run_core(chunk_size=100)
    assert again["counts"]["deactivated_keys"] == 1 and again["counts"]["deleted_keys"] == 300
    assert again["remaining"] == 0 and counts(conn) == (0, 601, 0)


def key_id(name: str, conn: psycopg.Connection) -> int:
    return int(conn.execute("SELECT id FROM api_keys WHERE name = %s", (name,)).fetchone()[0])


def test_a_run_out_of_time_stops_cleanly_and_the_next_run_finishes(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    many(conn, keys=900, sessions=300)
    capsys.readouterr()
    # 21 s left, 2 s less per look, 10 s margin: six chunks (21 ... 11 s), then it stops.
    first = run_core(chunk_size=100, ctx=FakeLambdaContext(remaining_ms=21_000, shrink_ms=2_000))
    assert first["counts"] == {"deactivated_keys": 600, "deleted_keys": 0, "deleted_sessions": 0}
    # Left: 300 keys to deactivate, 300 keys past the retention, 300 sessions.
    assert first["remaining"] == 900 and first["complete"] is False
    (document,) = emf_documents(capsys.readouterr().out)
    assert document["Remaining"] == [900] and document["JobSucceeded"] == [1]
    second = run_core(chunk_size=100)
    assert second["counts"] == {"deactivated_keys": 300, "deleted_keys": 300, "deleted_sessions": 300}
    assert second["remaining"] == 0 and counts(conn) == (0, 600, 0)
