"""The heavy operations on a real worker: `celery -A worker.app worker` consuming the
`graph` queue (two pool processes), real PostgreSQL and Redis, a real graph node
process, DynamoDB in moto's server.

The same operation delivered twice at once (two messages, one operation id) has one
effect and one charge, and both tasks answer with the same result; the task's state
and the progress stream say what happened; a task with bad parameters fails naming
the field and changes nothing.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from beatless import credits
from beatless.graphs.registry import GraphStatus, Registries, create_tables
from beatless.local.servers import GraphNodeServer, PostgresServer, RedisServer
from beatless.operations import records
from beatless.operations.catalogue import operation
from beatless.operations.progress import ProgressStream
from beatless.workers.results import wait_for_result
from tests.support.database import migrated_database
from tests.support.jobs import balance, graph
from tests.support.operations import BUCKET as UPLOADS
from tests.system.worker_procs import producer, running_worker, wait_for, worker_env

pytestmark = pytest.mark.slow

KEY = "worker-operations-key-0123456789"
BUCKET = UPLOADS  # the uploads the ingestion tests' datasets write to
CREDIT = credits.MICRO_PER_CREDIT
SCHEMA = {"nodes": [{"name": "Company", "primary_key": "id", "properties": {"id": "STRING"}}]}


@pytest.fixture
def dsn(postgres_server: PostgresServer) -> Iterator[str]:
    with migrated_database(postgres_server) as database:
        yield database


@pytest.fixture
def graph_plane(aws: str, tmp_path: Path) -> Iterator[tuple[Registries, GraphNodeServer]]:
    create_tables(boto3.client("dynamodb"), "instances", "graphs")
    registries = Registries(boto3.resource("dynamodb"), "instances", "graphs")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAPH_", "INSTANCE_"))}
    env |= {
        "GRAPH_BUFFER_POOL_MB": "64",
        "INSTANCE_ID": "node-1",
        "INSTANCE_REGISTRY_TABLE": "instances",
        "GRAPH_REGISTRY_TABLE": "graphs",
    }
    with GraphNodeServer(env, tmp_path / "data", KEY) as node:
        yield registries, node


def operations_env(redis_url: str, dsn: str, **overrides: str) -> dict[str, str]:
    settings = {
        "WORKER_QUEUES": "graph",
        "WORKER_CONCURRENCY": "2",
        "DATABASE_URL": dsn,
        "INSTANCE_REGISTRY_TABLE": "instances",
        "GRAPH_REGISTRY_TABLE": "graphs",
        "GRAPH_API_KEY": KEY,
        "UPLOADS_BUCKET": BUCKET,
        "STAGING_BUCKET": BUCKET,
        "BACKUP_BUCKET": BUCKET,
    }
    return worker_env(redis_url, **(settings | overrides))


def test_one_operation_delivered_twice_at_once_has_one_effect_and_one_charge(
    redis_url: str, dsn: str, graph_plane: tuple[Registries, GraphNodeServer], tmp_path: Path
) -> None:
    registries, _node = graph_plane
    with psycopg.connect(dsn, autocommit=True) as conn:
        account = graph(conn, "g1", balance_micro=50 * CREDIT)
    env = operations_env(redis_url, dsn)
    app = producer(env)
    name = operation("create_graph").celery_name
    body = {"params": {"graph_id": "g1", "schema": SCHEMA}, "operation_id": "op-twice"}
    sent = [app.send_task(name, kwargs=body) for _ in range(2)]
    assert {r.id for r in sent} == {sent[0].id, sent[1].id} and sent[0].id != sent[1].id
    with running_worker("ops", env, tmp_path):
        answers = [wait_for_result(app.backend, r.id, timeout=60) for r in sent]
    assert {a["operation_id"] for a in answers} == {"op-twice"}
    assert answers[0]["result"] == answers[1]["result"]
    assert sorted(a["replayed"] for a in answers) == [False, True]  # one ran, one found its result
    assert all(a["charged_micro"] == 10 * CREDIT for a in answers)
    assert registries.graph("g1").status is GraphStatus.ACTIVE
    assert registries.instance("node-1").database_count == 1
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert balance(conn, account) == 40 * CREDIT
        holds = conn.execute("SELECT operation_id, status FROM credit_reservations").fetchall()
        assert holds == [("op-twice", "committed")]
        assert credits.mismatches(conn) == []
    import redis

    events = ProgressStream(redis.Redis.from_url(redis_url), "op-twice").read()
    assert [e.stage for e in events] == ["started", "place", "create", "activate", "done"]
    assert {e.task_id for e in events} <= {r.id for r in sent}


def test_a_task_with_bad_parameters_fails_naming_the_field_and_changes_nothing(
    redis_url: str, dsn: str, graph_plane: tuple[Registries, GraphNodeServer], tmp_path: Path
) -> None:
    registries, _node = graph_plane
    with psycopg.connect(dsn, autocommit=True) as conn:
        graph(conn, "g1", balance_micro=50 * CREDIT)
    env = operations_env(redis_url, dsn)
    app = producer(env)
    bad = app.send_task(
        operation("create_graph").celery_name, kwargs={"params": {"graph_id": "g1", "schema": {"nodes": []}}}
    )
    with running_worker("ops-bad", env, tmp_path):
        state: Any = wait_for("the task to fail", lambda: bad.state == "FAILURE" and bad, timeout=60)
    assert "params.schema.nodes" in str(state.result)
    assert registries.graph("g1") is None
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM operations").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM credit_reservations").fetchone()[0] == 0


def pool_children(worker_pid: int) -> list[int]:
    children = Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split()
    return [int(pid) for pid in children]


def stage_when(redis_url: str, operation_id: str, stage: str, timeout: float = 60) -> None:
    import redis

    stream = ProgressStream(redis.Redis.from_url(redis_url), operation_id)
    wait_for(
        f"{operation_id} to reach {stage}", lambda: any(e.stage == stage for e in stream.read()), timeout
    )


def ingestion_setup(
    dsn: str, graph_plane: tuple[Registries, GraphNodeServer], env: dict[str, str]
) -> dict[str, Any]:
    """The graph `fin` (ingestion schema) and an upload batch; the parameters of its stage_files."""
    from beatless.operations.resources import OperationResources
    from beatless.operations.runtime import run_operation
    from tests.functional.test_ingestion import SCHEMA as FIN
    from tests.functional.test_ingestion import dataset

    with psycopg.connect(dsn, autocommit=True) as conn:
        graph(conn, "fin", balance_micro=1000 * CREDIT)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    resources = OperationResources(env)
    try:
        run_operation(operation("create_graph"), {"graph_id": "fin", "schema": FIN}, resources=resources)
    finally:
        resources.close()
    return {"graph_id": "fin", "batch_id": "b1", "files": dataset("uploads/b1", companies=400)}


def test_a_cancelled_operation_stops_at_the_next_stage_and_ends_revoked(
    redis_url: str, dsn: str, graph_plane: tuple[Registries, GraphNodeServer], tmp_path: Path
) -> None:
    env = operations_env(redis_url, dsn, WORKER_QUEUES="ingest", WORKER_CONCURRENCY="1")
    params = ingestion_setup(dsn, graph_plane, env)
    app = producer(env)
    sent = app.send_task(
        operation("stage_files").celery_name, kwargs={"params": params, "operation_id": "op-c"}
    )
    with running_worker("ops-cancel", env, tmp_path) as worker:
        stage_when(redis_url, "op-c", "fetch")
        (child,) = pool_children(worker.pid)
        os.kill(child, signal.SIGSTOP)  # the attempt holds still inside "fetch"
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                assert records.request_cancel(conn, "op-c") is not None
        finally:
            os.kill(child, signal.SIGCONT)
        wait_for("the task to end revoked", lambda: sent.state == "REVOKED", timeout=60)
    with psycopg.connect(dsn, autocommit=True) as conn:
        record = records.get(conn, "op-c")
        assert record is not None and record.status == "cancelled" and record.stage == "existing"
        assert conn.execute(
            "SELECT status FROM credit_reservations WHERE operation_id = 'op-c'"
        ).fetchone() == ("released",)
        assert credits.mismatches(conn) == []
    staged = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="ingest/fin/b1/")
    assert "Contents" not in staged  # nothing staged


def test_redis_restarted_during_an_operation_the_operation_still_completes(
    own_redis: RedisServer, dsn: str, graph_plane: tuple[Registries, GraphNodeServer], tmp_path: Path
) -> None:
    env = operations_env(own_redis.url, dsn, WORKER_QUEUES="ingest", WORKER_CONCURRENCY="1")
    params = ingestion_setup(dsn, graph_plane, env)
    app = producer(env)
    app.send_task(operation("stage_files").celery_name, kwargs={"params": params, "operation_id": "op-r"})
    with running_worker("ops-restart", env, tmp_path) as worker:
        stage_when(own_redis.url, "op-r", "fetch")
        (child,) = pool_children(worker.pid)
        os.kill(child, signal.SIGSTOP)
        try:
            own_redis.restart()  # empty, as after a failover without persistence
        finally:
            os.kill(child, signal.SIGCONT)

        def finished() -> Any:
            with psycopg.connect(dsn, autocommit=True) as conn:
                record = records.get(conn, "op-r")
            return record if record is not None and record.status != "running" else None

        record = wait_for("the operation to finish", finished, timeout=90)
    assert record.status == "succeeded", (record.status, record.error, worker.stderr()[-3000:])
    assert record.result is not None and record.result["valid"] is True
    staged = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="ingest/fin/b1/")
    assert any(o["Key"].endswith("manifest.json") for o in staged["Contents"])
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute(
            "SELECT status FROM credit_reservations WHERE operation_id = 'op-r'"
        ).fetchone() == ("committed",)


def test_a_batch_sent_by_the_queue_processor_is_staged_by_a_real_worker(
    redis_url: str,
    dsn: str,
    graph_plane: tuple[Registries, GraphNodeServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The message the Lambda writes without Celery is one a real worker runs."""
    import json

    import ingestion_queue_processor
    from beatless.jobs.resources import reset_resources
    from tests.support.lambda_context import FakeLambdaContext

    env = operations_env(redis_url, dsn, WORKER_QUEUES="ingest", WORKER_CONCURRENCY="1")
    params = ingestion_setup(dsn, graph_plane, env)
    boto3.client("s3").put_object(
        Bucket=BUCKET, Key="batches/fin/b1.json", Body=json.dumps({"files": params["files"]}).encode()
    )
    for name, value in {
        "BROKER_URL": redis_url,
        "QUEUES": "ingest",
        "UPLOADS_BUCKET": BUCKET,
        "STAGING_BUCKET": BUCKET,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("BROKER_PASSWORD_SECRET_ARN", raising=False)
    reset_resources()
    try:
        summary = ingestion_queue_processor.handler({}, FakeLambdaContext())
    finally:
        reset_resources()
    assert summary["counts"]["enqueued"] == 1

    def finished() -> Any:
        with psycopg.connect(dsn, autocommit=True) as conn:
            record = records.get(conn, "stage_files:fin:b1")
        return record if record is not None and record.status != "running" else None

    with running_worker("ops-queue", env, tmp_path):
        record = wait_for("the batch to be staged", finished, timeout=90)
    assert record.status == "succeeded" and record.result["valid"] is True
    again = ingestion_queue_processor.handler({}, FakeLambdaContext())
    assert again["counts"]["staged"] == 1 and again["counts"]["enqueued"] == 0  # its report exists now
