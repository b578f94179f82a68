"""What each `Need` of a registry entry needs on this machine, so any job can run here.

`JobEnvironment.prepare(job)` gives a job what infra would grant it — a real
migrated PostgreSQL database with work waiting in it (`Need.DATABASE`), a real
Redis (`Need.BROKER`), AWS in moto with the ECS service, bucket and schedules
that exist in a deployment (`Need.METRICS`, `ECS_READ`, `STORAGE_READ`,
`METRICS_READ`), the graph registries in moto's DynamoDB with a node that does
not answer, a graph deleted long ago and an orphan (`GRAPH_REGISTRY`,
`GRAPH_API`, `EC2_READ`) — and the environment variables that go with each, as
infra sets them. `observe()` then reads what a run changed or published.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import psycopg
import pytest
import redis

from beatless import credits, metrics
from beatless.graphs import monitor as graph_monitor
from beatless.graphs.registry import Registries, create_tables
from beatless.jobs import Job, Need
from beatless.jobs.resources import reset_resources
from beatless.local.moto_server import MOTO_IMAGE_ID
from beatless.local.servers import PostgresServer
from tests.support.database import snapshot

LONG_AGO = datetime(2025, 1, 1, tzinfo=UTC)
BUCKET = "beatless-customer-data"
ECS_CLUSTER, ECS_SERVICE = "beatless", "workers"
WATCHED_SCHEDULE = "beatless-monthly-usage-summary"
INSTANCE_TABLE, GRAPH_TABLE = "beatless-graph-instances", "beatless-graph-registry"
GRAPH_API_KEY = "test-graph-api-key-0123456789"
UPLOADS_BUCKET, STAGING_BUCKET = "beatless-graph-uploads", "beatless-graph-staging"
BACKUP_BUCKET = "beatless-graph-backups"


def seed(conn: psycopg.Connection) -> None:
    """Something for every database job to do: a graph on a tier with an account and a
    balance, storage snapshots of yesterday, a hold whose time is up, an ended API key
    and session, a stale pending transaction."""
    now = conn.execute("SELECT now()").fetchone()[0]
    credits.create_user(conn, "owner")
    credits.create_graph(conn, "g-seed", "owner", "standard", LONG_AGO)
    conn.execute("UPDATE graphs SET created_at = %s WHERE id = 'g-seed'", (LONG_AGO,))
    account = credits.open_graph_account(conn, "g-seed").id
    credits.post(conn, account, "adjustment", 50_000_000, "seed:g-seed")
    for hour in range(24):
        conn.execute(
            "INSERT INTO storage_usage_snapshots (graph_id, hour, s3_files_bytes, s3_tables_bytes, "
            "graph_bytes, subgraph_bytes) VALUES ('g-seed', date_trunc('day', %s::timestamptz) - "
            "interval '1 day' + %s * interval '1 hour', 0, 0, %s, 0)",
            (now, hour, 20 * 2**30),
        )
    conn.execute(
        "INSERT INTO credit_reservations (account_id, operation_id, amount_micro, status, created_at, "
        "expires_at) VALUES (%s, 'op-seed', 1000, 'held', %s, %s)",
        (account, now - timedelta(hours=2), now - timedelta(hours=1)),
    )
    conn.execute(
        "INSERT INTO api_keys (user_id, name, prefix, digest, created_at, expires_at) "
        "VALUES ('owner', 'seed', 'bl_seedseed', %s, %s, %s)",
        (hashlib.sha256(b"seed-key").digest(), LONG_AGO, now - timedelta(days=200)),
    )
    conn.execute(
        "INSERT INTO user_sessions (user_id, token_digest, created_at, expires_at) "
        "VALUES ('owner', %s, %s, %s)",
        (hashlib.sha256(b"seed-session").digest(), LONG_AGO, now - timedelta(days=30)),
    )
    conn.execute(
        "INSERT INTO credit_transactions (account_id, kind, amount_micro, created_at) "
        "SELECT %s, kind, CASE WHEN direction > 0 THEN 1000 ELSE -1000 END, %s "
        "FROM transaction_kinds ORDER BY kind LIMIT 1",
        (account, now - timedelta(days=1)),
    )


@dataclass
class Observed:
    """What a run left behind: every database row, and every Beatless metric name it
    published (to CloudWatch, or as EMF lines on stdout)."""

    database: dict[str, list[tuple[Any, ...]]] | None
    cloudwatch_metrics: list[str]
    stdout_metrics: list[str] = field(default_factory=list)
    graph_registries: dict[str, list[dict[str, Any]]] | None = None
    broker_lists: dict[str, int] | None = None  # Redis lists (queues) and their lengths
    s3_objects: dict[str, list[str]] | None = None  # bucket -> keys


class JobEnvironment:
    def __init__(
        self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, postgres_server: PostgresServer
    ) -> None:
        self.request = request
        self.monkeypatch = monkeypatch
        self.postgres_server = postgres_server
        self.conn: psycopg.Connection | None = None
        self.registries: Registries | None = None

    def prepare(self, job: Job) -> None:
        self.request.getfixturevalue("aws_inprocess")  # every job may publish or call AWS: moto
        if Need.DATABASE in job.needs:
            dsn = self.request.getfixturevalue("dsn")  # a migrated database, DATABASE_URL set
            self.conn = psycopg.connect(dsn, autocommit=True)
            self.request.addfinalizer(self.conn.close)
            seed(self.conn)
        if Need.BROKER in job.needs:
            self.monkeypatch.setenv("BROKER_URL", self.request.getfixturevalue("redis_url"))
            self.monkeypatch.setenv("QUEUES", "graph,ingest,default")
            for name in ("BROKER_PASSWORD_SECRET_ARN", "BROKER_TRANSPORT_OPTIONS"):
                self.monkeypatch.delenv(name, raising=False)
        if Need.METRICS in job.needs:
            self.monkeypatch.setenv("METRICS_NAMESPACE", metrics.DEFAULT_NAMESPACE)
        if Need.ECS_READ in job.needs:
            self._ecs_service()
        if Need.STORAGE_READ in job.needs:
            boto3.client("s3").create_bucket(Bucket=BUCKET)
            self.monkeypatch.setenv("STORAGE_BUCKET", BUCKET)
        if Need.METRICS_READ in job.needs:
            self._watched_schedule()
        if Need.INGESTION_READ in job.needs:
            self._upload_batch()
        if Need.DATA_RETENTION in job.needs:
            self._old_files()
        if {Need.GRAPH_REGISTRY, Need.GRAPH_REGISTRY_READ} & job.needs:
            self._graph_registries(read_only=Need.GRAPH_REGISTRY not in job.needs)
        if Need.GRAPH_API in job.needs:
            self.monkeypatch.setenv("GRAPH_API_KEY", GRAPH_API_KEY)
            self.monkeypatch.delenv("GRAPH_API_KEY_SECRET_ARN", raising=False)
        if Need.GRAPH_METRICS in job.needs:
            self.monkeypatch.setenv("METRICS_NAMESPACE", graph_monitor.DEFAULT_NAMESPACE)
        for name, value in job.environment.items():
            self.monkeypatch.setenv(name, value)
        if "SAMPLE_INTERVAL_SECONDS" in job.environment:
            # One reading on the finest grid unless the event asks for more: seconds, not a minute.
            self.monkeypatch.setenv("SAMPLES", "1")
            self.monkeypatch.setenv("SAMPLE_INTERVAL_SECONDS", "1")
        reset_resources()
        self.request.addfinalizer(reset_resources)

    def observe(self, stdout: str = "") -> Observed:
        cloudwatch = boto3.client("cloudwatch")
        names = sorted(
            {
                m["MetricName"]
                for namespace in (
                    metrics.JOBS_NAMESPACE,
                    metrics.DEFAULT_NAMESPACE,
                    graph_monitor.DEFAULT_NAMESPACE,
                )
                for m in cloudwatch.list_metrics(Namespace=namespace)["Metrics"]
            }
        )
        printed = sorted(
            {
                metric["Name"]
                for line in stdout.splitlines()
                if line.startswith("{") and '"_aws"' in line
                for block in json.loads(line)["_aws"]["CloudWatchMetrics"]
                for metric in block["Metrics"]
            }
        )
        return Observed(
            snapshot(self.conn) if self.conn is not None else None,
            names,
            printed,
            self._registry_rows(),
            self._broker_lists(),
            self._s3_objects(),
        )

    def _s3_objects(self) -> dict[str, list[str]]:
        """Every object of every bucket in moto (what a job that deletes files may change)."""
        s3 = boto3.client("s3")
        return {
            b["Name"]: sorted(o["Key"] for o in s3.list_objects_v2(Bucket=b["Name"]).get("Contents", []))
            for b in s3.list_buckets()["Buckets"]
        }

    def _broker_lists(self) -> dict[str, int] | None:
        """Every list in the broker's Redis and its length (what a producer job enqueued)."""
        url = os.environ.get("BROKER_URL")
        if not url:
            return None
        client = redis.Redis.from_url(url)
        try:
            return {k.decode(): int(client.llen(k)) for k in client.keys("*") if client.type(k) == b"list"}
        finally:
            client.close()

    def _upload_batch(self) -> None:
        """The uploads and staging buckets, with one complete batch not staged yet."""
        s3 = boto3.client("s3")
        for bucket in (UPLOADS_BUCKET, STAGING_BUCKET):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=UPLOADS_BUCKET, Key="files/g-seed/b1/companies.csv", Body=b"id\nc1\n")
        manifest = {"files": [{"table": "Company", "key": "files/g-seed/b1/companies.csv"}]}
        s3.put_object(Bucket=UPLOADS_BUCKET, Key="batches/g-seed/b1.json", Body=json.dumps(manifest).encode())
        self.monkeypatch.setenv("UPLOADS_BUCKET", UPLOADS_BUCKET)
        self.monkeypatch.setenv("STAGING_BUCKET", STAGING_BUCKET)

    def _old_files(self) -> None:
        """Staging files and backups, some old: a graph's last backup among the old ones."""
        s3 = boto3.client("s3")
        for bucket in (STAGING_BUCKET, BACKUP_BUCKET):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=STAGING_BUCKET, Key="ingest/g-seed/b1/report.json", Body=b"{}")
        s3.put_object(Bucket=BACKUP_BUCKET, Key="backups/g-seed/old.lbbk", Body=b"archive")
        create_tables(boto3.client("dynamodb"), INSTANCE_TABLE, GRAPH_TABLE)
        boto3.resource("dynamodb").Table(GRAPH_TABLE).put_item(
            Item={"graph_id": "g-seed", "instance_id": "i-1", "status": "active", "size_bytes": 1,
                  "last_backup_key": "backups/g-seed/old.lbbk"}
        )  # fmt: skip
        for name, value in {
            "STAGING_BUCKET": STAGING_BUCKET,
            "BACKUP_BUCKET": BACKUP_BUCKET,
            "GRAPH_REGISTRY_TABLE": GRAPH_TABLE,
            # Everything written before the run is past a retention of 0 days: a run has something
            # to delete (and a dry run must not delete it).
            "STAGING_RETENTION_DAYS": "0",
            "BACKUP_RETENTION_DAYS": "0",
        }.items():
            self.monkeypatch.setenv(name, value)

    def _graph_registries(self, *, read_only: bool) -> None:
        """A node EC2 still runs that refuses connections, with a graph; a graph deleted
        a year ago; an orphan: every action of the monitor has something to change.
        A reader of graph sizes (`GRAPH_REGISTRY_READ`) is told the graph table only."""
        create_tables(boto3.client("dynamodb"), INSTANCE_TABLE, GRAPH_TABLE)
        if not read_only:
            self.monkeypatch.setenv("INSTANCE_REGISTRY_TABLE", INSTANCE_TABLE)
        self.monkeypatch.setenv("GRAPH_REGISTRY_TABLE", GRAPH_TABLE)
        ec2 = boto3.client("ec2")
        instance_id = ec2.run_instances(ImageId=MOTO_IMAGE_ID, MinCount=1, MaxCount=1)["Instances"][0][
            "InstanceId"
        ]
        registries = Registries(boto3.resource("dynamodb"), INSTANCE_TABLE, GRAPH_TABLE)
        registries.register(instance_id, endpoint="http://127.0.0.1:9", capacity=10, at=LONG_AGO)
        for graph_id, instance, status, deleted_at in [
            ("g-live", instance_id, "active", None),
            ("g-deleted", instance_id, "deleted", "2025-01-02T00:00:00Z"),
            ("g-orphan", "i-00000000000000000", "orphaned", None),
        ]:
            item = {"graph_id": graph_id, "instance_id": instance, "status": status, "size_bytes": 0}
            if deleted_at is not None:
                item["deleted_at"] = deleted_at
            registries.graphs.put_item(Item=item)
        self.registries = registries

    def _registry_rows(self) -> dict[str, list[dict[str, Any]]] | None:
        registries = self.registries
        if registries is None:
            return None
        return {
            name: sorted(
                table.scan(ConsistentRead=True)["Items"],
                key=lambda item: json.dumps(item, default=str, sort_keys=True),
            )
            for name, table in (("instances", registries.instances), ("graphs", registries.graphs))
        }

    def _ecs_service(self) -> None:
        ecs = boto3.client("ecs")
        ecs.create_cluster(clusterName=ECS_CLUSTER)
        ecs.register_task_definition(
            family="worker", containerDefinitions=[{"name": "worker", "image": "worker", "memory": 512}]
        )
        ecs.create_service(
            cluster=ECS_CLUSTER, serviceName=ECS_SERVICE, taskDefinition="worker", desiredCount=0
        )
        self.monkeypatch.setenv("ECS_CLUSTER", ECS_CLUSTER)
        self.monkeypatch.setenv("ECS_SERVICE", ECS_SERVICE)

    def _watched_schedule(self) -> None:
        boto3.client("scheduler").create_schedule(
            Name=WATCHED_SCHEDULE,
            ScheduleExpression="cron(0 6 2 * ? *)",
            FlexibleTimeWindow={"Mode": "OFF"},
            Target={
                "Arn": "arn:aws:lambda:us-east-1:123456789012:function:monthly_usage_summary",
                "RoleArn": "arn:aws:iam::123456789012:role/scheduler",
            },
        )
        watched = [
            {
                "name": "monthly_usage_summary",
                "schedule": "cron(0 6 2 * ? *)",
                "timezone": "UTC",
                "period_seconds": 31 * 24 * 3600,
                "schedule_name": WATCHED_SCHEDULE,
            }
        ]
        self.monkeypatch.setenv("WATCHED_JOBS", json.dumps(watched))
