"""Helpers for the job tests: scheduler events, runs of a job's core on the job
runtime, EMF documents, concurrent runs, and a connection killed while its run
waits inside a chunk."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from beatless import credits
from beatless.jobs import job
from beatless.jobs.resources import environment_resources
from beatless.jobs.runtime import JobContext, JobOutcome, run_job
from beatless.timestamps import iso_z
from tests.support.lambda_context import FakeLambdaContext

US = timedelta(microseconds=1)
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


iso = iso_z


def tick(at: datetime, **extra: Any) -> dict[str, Any]:
    """A Scheduler event for `at` (what <aws.scheduler.scheduled-time> becomes)."""
    return {"scheduled_time": iso(at), **extra}


def context(remaining_ms: int = 900_000, shrink_ms: int = 0) -> FakeLambdaContext:
    return FakeLambdaContext(remaining_ms=remaining_ms, shrink_ms=shrink_ms)


def run_on_runtime(
    job_name: str,
    event: Any,
    ctx: Any,
    work: Callable[[JobContext], JobOutcome],
    **options: Any,
) -> dict[str, Any]:
    """Run `work` as one run of the registry job `job_name` on the job runtime, with the
    resources of this process's environment (what the entry point does, with another
    `work`: a smaller chunk size, a hook)."""
    resources = environment_resources(os.environ)
    return run_job(job(job_name), event, ctx or context(), work, resources=resources, **options)


def emf_documents(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{") and '"_aws"' in line]


def graph(
    conn: psycopg.Connection,
    graph_id: str,
    tier: str = "standard",
    *,
    since: datetime = LONG_AGO,
    balance_micro: int | None = None,
    account: bool = True,
) -> int:
    """A graph created at `since` on `tier` from then, with an account holding
    `balance_micro` (no account when `account` is False: returns 0)."""
    credits.create_user(conn, "owner")
    credits.create_graph(conn, graph_id, "owner", tier, since)
    conn.execute("UPDATE graphs SET created_at = %s WHERE id = %s", (since, graph_id))
    if not account:
        return 0
    account_id = credits.open_graph_account(conn, graph_id).id
    if balance_micro:
        credits.post(conn, account_id, "adjustment", balance_micro, f"seed:{graph_id}")
    return account_id


def balance(conn: psycopg.Connection, account: int) -> int:
    return credits.get_account(conn, account).balance_micro


def run_concurrently(n: int, call: Callable[[int], Any]) -> list[Any]:
    """`call(i)` in `n` threads released together; returns results (raises the first error)."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def target(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = call(i)
        except BaseException as error:  # re-raised below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a concurrent run did not finish"
    if errors:
        raise errors[0]
    return results


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def blocked_on_lock(conn: psycopg.Connection, application_name: str) -> int | None:
    """The pid of a backend of `application_name` waiting for a lock, if any."""
    row = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock' "
        "AND datname = current_database()",
        (application_name,),
    ).fetchone()
    return None if row is None else int(row[0])


class Background:
    """Run `call()` in a thread; `result()` joins and returns (or raises) its outcome."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self._outcome: list[Any] = []
        self._error: list[BaseException] = []

        def target() -> None:
            try:
                self._outcome.append(call())
            except BaseException as error:  # handed to the test by result()
                self._error.append(error)

        self.thread = threading.Thread(target=target)
        self.thread.start()

    def result(self, timeout: float = 60.0) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the background run did not finish"
        if self._error:
            raise self._error[0]
        return self._outcome[0]


def kill_when_blocked(
    conn: psycopg.Connection, dsn: str, job: str, lock_sql: str, params: Any, call: Callable[[], Any]
) -> tuple[BaseException, Callable[[], None]]:
    """Hold the row lock of `lock_sql` in another session, run `call()` until its
    chunk waits for that lock inside its transaction, terminate the job's backend.
    Returns the run's error and a function that releases the lock."""
    locker = psycopg.connect(dsn)
    locker.execute(lock_sql, params)
    run = Background(call)
    application = f"beatless:{job}"
    wait_until(lambda: blocked_on_lock(conn, application) is not None, what="the run to wait on the lock")
    pid = blocked_on_lock(conn, application)
    assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0] is True
    try:
        run.result()
    except BaseException as error:  # the expected outcome: the run fails
        failure = error
    else:
        raise AssertionError("the run whose connection was killed did not fail")

    def release() -> None:
        locker.rollback()
        locker.close()

    return failure, release
