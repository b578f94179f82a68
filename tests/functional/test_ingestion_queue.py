"""`ingestion_queue_processor` (its real Lambda handler) against a real Redis and moto's
S3: every complete upload batch not staged yet becomes one `beatless.stage_files`
message on the `ingest` queue, in kombu's format — however often the job is replayed and
however many runs race; staged batches and malformed manifests are not sent."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import boto3
import pytest
import redis

import ingestion_queue_processor
from beatless.ingestion.queue import INGEST_QUEUE, STAGE_FILES_TASK, Batch
from beatless.jobs.resources import reset_resources
from beatless.operations.catalogue import INGEST_QUEUE as CATALOGUE_INGEST_QUEUE
from beatless.operations.catalogue import operation
from beatless.queues.transport import TransportOptions
from tests.support.lambda_context import FakeLambdaContext

UPLOADS, STAGING = "beatless-test-uploads", "beatless-test-staging"


@pytest.fixture
def buckets(aws: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    s3 = boto3.client("s3")
    for bucket in (UPLOADS, STAGING):
        s3.create_bucket(Bucket=bucket)
    for name, value in {
        "BROKER_URL": redis_url,
        "QUEUES": "graph,ingest,default",
        "UPLOADS_BUCKET": UPLOADS,
        "STAGING_BUCKET": STAGING,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("BROKER_PASSWORD_SECRET_ARN", raising=False)
    monkeypatch.delenv("BROKER_TRANSPORT_OPTIONS", raising=False)
    reset_resources()
    yield s3
    reset_resources()


def upload_batch(s3: Any, graph_id: str, batch_id: str, tables: tuple[str, ...] = ("Company",)) -> None:
    files = []
    for table in tables:
        key = f"files/{graph_id}/{batch_id}/{table}.csv"
        s3.put_object(Bucket=UPLOADS, Key=key, Body=b"id\nc1\n")
        files.append({"table": table, "key": key})
    s3.put_object(
        Bucket=UPLOADS, Key=f"batches/{graph_id}/{batch_id}.json", Body=json.dumps({"files": files})
    )


def run(event: dict[str, Any] | None = None) -> dict[str, Any]:
    summary: dict[str, Any] = ingestion_queue_processor.handler(event or {}, FakeLambdaContext())
    return summary


def queued(redis_url: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(redis_url)
    keys = TransportOptions.from_json(None).queue_list_keys(INGEST_QUEUE)
    return [json.loads(raw) for key in keys for raw in client.lrange(key, 0, -1)]


def body(message: dict[str, Any]) -> list[Any]:
    decoded: list[Any] = json.loads(base64.b64decode(message["body"]))
    return decoded


def test_each_pending_batch_is_sent_once_as_a_stage_files_message(buckets: Any, redis_url: str) -> None:
    upload_batch(buckets, "g1", "b1", ("Company", "Owns"))
    upload_batch(buckets, "g1", "b2")
    upload_batch(buckets, "g2", "b1")
    # Staged already (its report exists): skipped. Malformed manifests: counted, not sent.
    upload_batch(buckets, "g3", "done")
    buckets.put_object(Bucket=STAGING, Key="ingest/g3/done/report.json", Body=b"{}")
    buckets.put_object(Bucket=UPLOADS, Key="batches/g4/bad.json", Body=b"not json")
    buckets.put_object(Bucket=UPLOADS, Key="batches/g 5/x.json", Body=json.dumps({"files": []}))
    buckets.put_object(Bucket=UPLOADS, Key="batches/loose.json", Body=b"{}")

    dry = run({"dry_run": True})
    assert dry["counts"] == {"batches": 7, "staged": 1, "enqueued": 0, "already_enqueued": 0, "malformed": 3}
    assert sorted(dry["sent"]) == ["stage_files:g1:b1", "stage_files:g1:b2", "stage_files:g2:b1"]
    assert queued(redis_url) == []  # a dry run sends nothing

    first = run()
    assert first["counts"]["enqueued"] == 3
    for _ in range(3):  # replayed: nothing more
        again = run()
        assert again["counts"]["enqueued"] == 0 and again["counts"]["already_enqueued"] == 3
    messages = queued(redis_url)
    assert len(messages) == 3
    by_operation = {body(m)[1]["operation_id"]: m for m in messages}
    sent = by_operation["stage_files:g1:b1"]
    assert sent["headers"]["task"] == STAGE_FILES_TASK == operation("stage_files").celery_name
    assert sent["headers"]["id"] == Batch("g1", "b1", "").task_id
    assert sent["properties"]["delivery_info"]["routing_key"] == INGEST_QUEUE == CATALOGUE_INGEST_QUEUE
    args, kwargs, _embed = body(sent)
    assert args == [] and kwargs["params"] == {
        "graph_id": "g1",
        "batch_id": "b1",
        "files": [
            {"table": "Company", "key": "files/g1/b1/Company.csv"},
            {"table": "Owns", "key": "files/g1/b1/Owns.csv"},
        ],
    }


def test_eight_concurrent_runs_send_each_batch_once(buckets: Any, redis_url: str) -> None:
    for i in range(12):
        upload_batch(buckets, "g1", f"b{i}")
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def one() -> None:
        try:
            start.wait(10)
            results.append(run())
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sum(r["counts"]["enqueued"] for r in results) == 12
    ids = [body(m)[1]["operation_id"] for m in queued(redis_url)]
    assert sorted(ids) == sorted(f"stage_files:g1:b{i}" for i in range(12))


def test_a_run_that_sends_wakes_the_idle_worker_monitor_once(
    buckets: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beatless.aws import reset_clients
    from tests.support.lambda_endpoint import lambda_endpoint

    for n in range(3):
        upload_batch(buckets, "g1", f"b{n}")
    with lambda_endpoint({"beatless-worker-monitor": lambda event, context: {"woken": event}}) as endpoint:
        monkeypatch.setenv("MONITOR_FUNCTION_NAME", "beatless-worker-monitor")
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", endpoint.url)
        reset_clients()
        reset_resources()
        first = run()
        assert first["counts"]["enqueued"] == 3 and first["monitor_woken"] is True
        (woken,) = endpoint.invocations  # three sends, one wake
        assert (woken.function, woken.invocation_type) == ("beatless-worker-monitor", "Event")
        redis.Redis.from_url(redis_url).delete("beatless:monitor:wake")
        again = run()  # nothing sent: nothing to wake for
        assert again["counts"]["enqueued"] == 0 and again["monitor_woken"] is False
        assert len(endpoint.invocations) == 1
    reset_clients()
