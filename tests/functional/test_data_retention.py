"""`data_retention` (its real Lambda handler) against moto's S3 and DynamoDB: staging files
and backups past their retention are deleted with counts, never the last backup of a graph
that has a database or lost its node; a dry run deletes nothing; every listing is paginated."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

import data_retention
from beatless.graphs.registry import create_tables
from beatless.jobs.resources import reset_resources
from tests.support.lambda_context import FakeLambdaContext

STAGING, BACKUPS = "beatless-test-staging", "beatless-test-backups"


@pytest.fixture
def buckets(aws_inprocess: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=STAGING)
    s3.create_bucket(Bucket=BACKUPS)
    s3.put_bucket_versioning(Bucket=BACKUPS, VersioningConfiguration={"Status": "Enabled"})
    create_tables(boto3.client("dynamodb"), "instances", "graphs")
    graphs = boto3.resource("dynamodb").Table("graphs")
    for graph_id, status, last in (
        ("live", "active", "backups/live/2.lbbk"),
        ("lost", "orphaned", "backups/lost/1.lbbk"),
        ("gone", "deleted", "backups/gone/1.lbbk"),
    ):
        graphs.put_item(
            Item={"graph_id": graph_id, "instance_id": "i-1", "status": status, "last_backup_key": last}
        )
    for key in ("backups/live/1.lbbk", "backups/live/2.lbbk", "backups/lost/1.lbbk", "backups/gone/1.lbbk"):
        s3.put_object(Bucket=BACKUPS, Key=key, Body=b"archive")
    s3.put_object(Bucket=BACKUPS, Key="elsewhere/keep.txt", Body=b"not a backup")
    for i in range(1203):  # more than a listing page and a delete batch
        s3.put_object(Bucket=STAGING, Key=f"ingest/g/b{i}/report.json", Body=b"{}")
    for name, value in {
        "STAGING_BUCKET": STAGING,
        "BACKUP_BUCKET": BACKUPS,
        "GRAPH_REGISTRY_TABLE": "graphs",
    }.items():
        monkeypatch.setenv(name, value)
    reset_resources()
    yield s3
    reset_resources()


def keys(s3: Any, bucket: str) -> list[str]:
    found: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        found += [o["Key"] for o in page.get("Contents", [])]
    return sorted(found)


def run(monkeypatch: pytest.MonkeyPatch, staging_days: str, backup_days: str, **event: Any) -> dict[str, Any]:
    monkeypatch.setenv("STAGING_RETENTION_DAYS", staging_days)
    monkeypatch.setenv("BACKUP_RETENTION_DAYS", backup_days)
    summary: dict[str, Any] = data_retention.handler(event, FakeLambdaContext())
    return summary


def test_what_is_within_its_retention_stays(buckets: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = run(monkeypatch, "7", "30")
    assert summary["counts"]["staging_deleted"] == 0 and summary["counts"]["backups_deleted"] == 0
    assert len(keys(buckets, STAGING)) == 1203


def test_a_dry_run_counts_and_deletes_nothing(buckets: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    before = keys(buckets, STAGING), keys(buckets, BACKUPS)
    summary = run(monkeypatch, "0", "0", dry_run=True)
    assert summary["counts"]["staging_expired"] == 1203 and summary["counts"]["staging_deleted"] == 0
    assert summary["counts"]["backups_expired"] == 2 and summary["counts"]["backups_kept"] == 2
    assert (keys(buckets, STAGING), keys(buckets, BACKUPS)) == before


def test_expired_files_go_and_every_graph_keeps_its_last_backup(
    buckets: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = run(monkeypatch, "0", "0")
    counts = summary["counts"]
    assert counts["staging_deleted"] == 1203 and keys(buckets, STAGING) == []
    # The active graph's and the orphan's last backups stay; an older one and a deleted graph's go.
    assert counts["backups_deleted"] == 2 and counts["backups_kept"] == 2
    assert keys(buckets, BACKUPS) == ["backups/live/2.lbbk", "backups/lost/1.lbbk", "elsewhere/keep.txt"]
    assert counts["deleted_bytes"] == 1203 * 2 + 2 * len(b"archive")
    again = run(monkeypatch, "0", "0")  # a replay finds nothing more to delete
    assert again["counts"]["staging_deleted"] == 0 and again["counts"]["backups_deleted"] == 0
