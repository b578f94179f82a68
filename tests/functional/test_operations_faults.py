"""Operations under faults: the attempt's process killed with `kill -9` in the middle of an
ingestion, its hold expired by the real `credit_reservation_cleanup`, the operation
retried under the same operation id — it completes, is charged once, and the ledger
audit is clean. The runtime and the core are the real ones; the catalogue entry is the
real `stage_files` with a short time limit and hold, so the hold can expire in a test.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import time
from typing import Any

import psycopg
import pytest
import redis

import credit_reservation_cleanup
from beatless import credits
from beatless.graphs.registry import Registries
from beatless.local.servers import GraphNodeServer
from beatless.operations import records
from beatless.operations.catalogue import operation
from beatless.operations.progress import ProgressStream
from beatless.operations.resources import OperationResources
from beatless.operations.runtime import run_operation
from tests.functional.test_ingestion import SCHEMA, dataset, graph_rows, rows_in_files
from tests.support.jobs import balance, graph
from tests.support.lambda_context import FakeLambdaContext
from tests.support.operations import (  # noqa: F401 (node, registries, resources: fixtures)
    environment,
    node,
    registries,
    resources,
)

pytestmark = pytest.mark.slow

CREDIT = credits.MICRO_PER_CREDIT
HOLD_SECONDS = 6
LEASE_SECONDS = 4
SHORT = dataclasses.replace(operation("stage_files"), time_limit=HOLD_SECONDS, hold_grace_seconds=0)


def _attempt_that_hangs_in(env: dict[str, str], params: dict[str, Any], stage: str) -> None:
    """A child process: one attempt of the operation that stops in `stage` (to be killed)."""
    resources = OperationResources(env)

    def report(meta: Any) -> None:
        if meta["stage"] == stage:
            time.sleep(3600)

    run_operation(SHORT, params, resources=resources, operation_id="op-kill", report=report)


def test_kill_9_mid_ingestion_then_the_retry_completes_and_is_charged_once(
    conn: psycopg.Connection,
    dsn: str,
    redis_url: str,
    resources: OperationResources,
    registries: Registries,
    node: GraphNodeServer,
) -> None:
    account = graph(conn, "fin", balance_micro=1000 * CREDIT)
    run_operation(operation("create_graph"), {"graph_id": "fin", "schema": SCHEMA}, resources=resources)
    files = dataset("uploads/kill", companies=300)
    params = {"graph_id": "fin", "batch_id": "kill", "files": files}
    env = environment(dsn, redis_url) | {"OPERATION_LEASE_SECONDS": str(LEASE_SECONDS)}
    child = multiprocessing.get_context("fork").Process(
        target=_attempt_that_hangs_in, args=(env, params, "validate")
    )
    child.start()
    stream = ProgressStream(redis.Redis.from_url(redis_url), "op-kill")
    deadline = time.monotonic() + 60
    while not any(e.stage == "validate" for e in stream.read()):
        assert time.monotonic() < deadline and child.is_alive(), "the attempt never reached validate"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    assert child.exitcode == -signal.SIGKILL

    killed = records.get(conn, "op-kill")
    assert killed is not None and (killed.status, killed.stage, killed.attempts) == ("running", "validate", 1)
    hold = credits.get_hold(conn, account, "op-kill")
    assert hold is not None and hold.status == "held"
    # The dead attempt's hold expires; the cleanup job (its real handler) settles it.
    time.sleep(max(0.0, (hold.expires_at.timestamp() - time.time())) + 0.5)
    summary = credit_reservation_cleanup.handler({}, FakeLambdaContext())
    assert summary["counts"]["released"] >= 1
    assert credits.get_hold(conn, account, "op-kill").status == "expired"

    # Retried under the same operation id (its lease lapsed): a new attempt completes it.
    retry_resources = OperationResources(env)
    try:
        retried = run_operation(SHORT, params, resources=retry_resources, operation_id="op-kill")
    finally:
        retry_resources.close()
    assert retried.attempt == 2 and retried.result["valid"] is True
    assert retried.result["rows"] == rows_in_files(files)
    holds = conn.execute(
        "SELECT operation_id, status FROM credit_reservations "
        "WHERE account_id = %s AND operation_id LIKE 'op-kill%%' ORDER BY id",
        (account,),
    ).fetchall()
    assert holds == [("op-kill", "expired"), ("op-kill#2", "committed")]
    charges = conn.execute(
        "SELECT count(*), -sum(l.amount_micro) FROM credit_ledger l "
        "JOIN credit_reservations r ON r.id = l.reservation_id WHERE r.operation_id LIKE 'op-kill%%'"
    ).fetchone()
    assert charges == (1, retried.charged_micro)  # charged once
    assert credits.mismatches(conn) == []
    run_operation(operation("materialize"), {"graph_id": "fin", "batch_id": "kill"}, resources=resources)
    assert graph_rows(node, "fin") == rows_in_files(files)
    assert balance(conn, account) == 1000 * CREDIT - 10 * CREDIT - retried.charged_micro - _materialized(conn)


def _materialized(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT charged_micro FROM operations WHERE task = 'materialize'").fetchone()
    return int(row[0])
