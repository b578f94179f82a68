"""credit_reservation_cleanup under faults, on a real PostgreSQL: 16 simultaneous
runs (with API traffic on the same accounts), a connection killed inside a chunk,
a Lambda that runs out of time. Every hold is expired exactly once; held amounts
and balances stay equal to what they are made of."""

from __future__ import annotations

import functools
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import credit_reservation_cleanup
from beatless import credits
from beatless.credits.holds_cleanup import release_expired_holds
from tests.support.jobs import run_on_runtime
from tests.support.lambda_context import FakeLambdaContext

JOB = "credit_reservation_cleanup"
T = datetime(2026, 11, 23, 9, 15, tzinfo=UTC)
APP = f"beatless:{JOB}"


def seed(conn: psycopg.Connection, accounts: int, due: int, not_due: int) -> list[int]:
    """`accounts` funded accounts; `due` held holds expiring at or before T spread
    over them (bulk SQL, as old data would be), `not_due` expiring after T."""
    credits.create_user(conn, "owner")
    ids = []
    for i in range(accounts):
        credits.create_graph(conn, f"g{i}", "owner", "standard", T - timedelta(days=40))
        account = credits.open_graph_account(conn, f"g{i}").id
        credits.allocate(conn, account, 10**12, f"seed:{i}")
        ids.append(account)
    conn.execute(
        "INSERT INTO credit_reservations (account_id, operation_id, amount_micro, created_at, expires_at) "
        "SELECT (%(ids)s::bigint[])[1 + i %% %(n)s], 'due-' || i, 1000 + i, "
        "%(t)s::timestamptz - interval '1 day', %(t)s::timestamptz - (i %% 1440) * interval '1 minute' "
        "FROM generate_series(1, %(due)s) i",
        {"ids": ids, "n": accounts, "t": T, "due": due},
    )
    conn.execute(
        "INSERT INTO credit_reservations (account_id, operation_id, amount_micro, created_at, expires_at) "
        "SELECT (%(ids)s::bigint[])[1 + i %% %(n)s], 'later-' || i, 7, "
        "%(t)s::timestamptz - interval '1 day', %(t)s::timestamptz + interval '1 microsecond' * i "
        "FROM generate_series(1, %(later)s) i",
        {"ids": ids, "n": accounts, "t": T, "later": not_due},
    )
    return ids


def counts(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT status, count(*) FROM credit_reservations GROUP BY status").fetchall())


def due_left(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT count(*) FROM credit_reservations WHERE status = 'held' AND expires_at <= %s", (T,)
    ).fetchone()
    return int(row[0])


def tick(at: datetime = T) -> dict[str, str]:
    return {"scheduled_time": at.isoformat().replace("+00:00", "Z")}


def run_core(chunk_size: int, context: Any = None, **kwargs: Any) -> dict[str, Any]:
    """The job through the runtime with small chunks (the handler's own chunk size
    would finish these data sets in one chunk)."""

    return run_on_runtime(
        JOB,
        kwargs.pop("event", tick()),
        context or FakeLambdaContext(),
        functools.partial(release_expired_holds, chunk_size=chunk_size),
        **kwargs,
    )


def test_sixteen_simultaneous_runs_with_api_traffic_expire_every_hold_once(
    conn: psycopg.Connection, dsn: str
) -> None:
    accounts = seed(conn, accounts=40, due=6000, not_due=300)
    due_amount = conn.execute(
        "SELECT sum(amount_micro) FROM credit_reservations WHERE status = 'held' AND expires_at <= %s", (T,)
    ).fetchone()[0]
    barrier = threading.Barrier(16 + 4)
    summaries: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def cleanup(i: int) -> None:
        try:
            barrier.wait()
            if i % 2:
                summaries.append(credit_reservation_cleanup.handler(tick(), FakeLambdaContext()))
            else:
                summaries.append(run_core(chunk_size=150))
        except BaseException as error:  # asserted below
            errors.append(error)

    def traffic(worker: int) -> None:
        # Reserve, commit and release on the same accounts while the cleanups run.
        rng = random.Random(worker)
        try:
            with psycopg.connect(dsn, autocommit=True) as own:
                barrier.wait()
                n = 0
                while not stop.is_set() or n < 20:
                    account = rng.choice(accounts)
                    op = f"live-{worker}-{n}"
                    credits.reserve(own, account, op, 500, datetime.now(UTC) + timedelta(hours=1))
                    if n % 2:
                        credits.commit(own, account, op, 123)
                    else:
                        credits.release(own, account, op)
                    n += 1
        except BaseException as error:  # asserted below
            errors.append(error)

    threads = [threading.Thread(target=cleanup, args=(i,)) for i in range(16)]
    threads += [threading.Thread(target=traffic, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads[:16]:
        thread.join(120)
    stop.set()
    for thread in threads[16:]:
        thread.join(60)

    assert errors == []
    assert len(summaries) == 16
    assert sum(s["counts"]["released"] for s in summaries) == 6000  # each hold released by exactly one run
    assert sum(s["counts"]["released_micro"] for s in summaries) == due_amount
    assert due_left(conn) == 0
    assert counts(conn)["expired"] == 6000
    still_held = conn.execute("SELECT count(*) FROM credit_reservations WHERE status = 'held'").fetchone()[0]
    assert still_held == 300  # the not-yet-due ones
    assert credits.mismatches(conn) == []  # held = sum of held holds; balance = ledger sum


def test_the_same_tick_delivered_three_times_at_once_has_one_effect(conn: psycopg.Connection) -> None:
    seed(conn, accounts=5, due=900, not_due=10)
    results: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: results.append(run_core(chunk_size=50))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(r["counts"]["released"] for r in results)[-1] > 0
    assert sum(r["counts"]["released"] for r in results) == 900
    assert credits.mismatches(conn) == []


def _wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def test_a_connection_killed_inside_a_chunk_loses_only_that_chunk(
    conn: psycopg.Connection, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    accounts = seed(conn, accounts=10, due=2000, not_due=50)
    locker = psycopg.connect(dsn)  # a transaction of its own, opened by its first statement

    class LockingContext(FakeLambdaContext):
        """Asked before every chunk: before the fourth, another session takes a lock
        that the chunk's trigger needs, so the chunk waits after updating its holds."""

        def get_remaining_time_in_millis(self) -> int:
            if self.calls == 3:
                locker.execute("LOCK TABLE credit_reservations_held IN SHARE MODE")
            return super().get_remaining_time_in_millis()

    failure: list[BaseException] = []

    def job() -> None:
        try:
            run_core(chunk_size=100, context=LockingContext())
        except BaseException as error:  # asserted below
            failure.append(error)

    runner = threading.Thread(target=job)
    capsys.readouterr()
    runner.start()

    def waiting_inside_a_chunk() -> bool:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock' "
            "AND backend_xid IS NOT NULL",  # its transaction has written: inside the chunk
            (APP,),
        ).fetchone()
        return bool(row[0])

    _wait_for(waiting_inside_a_chunk)
    assert counts(conn).get("expired", 0) == 300  # the three chunks before it committed
    killed = conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (APP,)
    ).fetchall()
    assert killed == [(True,)]
    runner.join(30)
    locker.rollback()
    locker.close()

    assert failure and isinstance(failure[0], psycopg.OperationalError)
    assert counts(conn)["expired"] == 300  # the killed chunk rolled back, all of it
    assert credits.mismatches(conn) == []
    # The failed run published what it had committed, without JobSucceeded.
    output = capsys.readouterr().out
    assert '"Released":[300' in output and "JobSucceeded" not in output

    after = run_core(chunk_size=100)
    assert after["counts"]["released"] == 1700 and after["remaining"] == 0
    assert counts(conn)["expired"] == 2000 and due_left(conn) == 0
    assert sum(credits.get_account(conn, a).held_micro for a in accounts) == 50 * 7
    assert credits.mismatches(conn) == []


def test_a_connection_killed_between_chunks_fails_the_run_and_the_next_run_finishes(
    conn: psycopg.Connection,
) -> None:
    seed(conn, accounts=10, due=3000, not_due=0)
    killed = threading.Event()

    class KillingContext(FakeLambdaContext):
        """Asked before every chunk: after the third, kill the job's connection."""

        def get_remaining_time_in_millis(self) -> int:
            if self.calls == 3 and not killed.is_set():
                with psycopg.connect(conn.info.dsn, autocommit=True) as other:
                    other.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                        (APP,),
                    )
                killed.set()
            return super().get_remaining_time_in_millis()

    with pytest.raises(psycopg.OperationalError):
        run_core(chunk_size=250, context=KillingContext())
    assert counts(conn)["expired"] == 750  # three chunks committed before the kill
    assert credits.mismatches(conn) == []
    again = run_core(chunk_size=250)
    assert again["counts"]["released"] == 2250 and again["remaining"] == 0
    assert counts(conn)["expired"] == 3000 and credits.mismatches(conn) == []


def test_a_run_out_of_time_stops_cleanly_reports_what_is_left_and_the_next_run_finishes(
    conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(conn, accounts=8, due=1000, not_due=20)
    # The Lambda's remaining time drops 2 s per look (one look before each chunk); a
    # fake clock makes every chunk take 50 ms. With the default 10 s margin a chunk
    # starts while remaining - 10 s >= 2 x 50 ms: at 21, 19, 17, 15, 13 and 11 s left,
    # not at 9 s.
    ticks = iter(range(10**6))
    context = FakeLambdaContext(remaining_ms=21_000, shrink_ms=2_000)
    capsys.readouterr()
    first = run_core(chunk_size=100, context=context, clock=lambda: next(ticks) * 0.05)
    assert first["counts"]["released"] == 600
    assert first["remaining"] == 400 and first["complete"] is False
    assert '"Remaining":[400' in capsys.readouterr().out
    assert due_left(conn) == 400 and credits.mismatches(conn) == []

    second = run_core(chunk_size=100)
    assert second["counts"]["released"] == 400 and second["remaining"] == 0 and second["complete"]
    assert counts(conn)["expired"] == 1000
    assert credits.mismatches(conn) == []


def test_no_time_at_all_changes_nothing_and_says_so(conn: psycopg.Connection) -> None:
    seed(conn, accounts=2, due=40, not_due=0)
    summary = run_core(chunk_size=10, context=FakeLambdaContext(remaining_ms=9_000))
    assert summary["counts"]["released"] == 0 and summary["remaining"] == 40
    assert due_left(conn) == 40
