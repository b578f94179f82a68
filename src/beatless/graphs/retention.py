"""The `data_retention` core: staging files and graph backups past their retention leave S3.

Kinds, each with its retention in days (the job's environment):

- `staging` (`STAGING_RETENTION_DAYS`, default 7): every object of the staging bucket
  (validated batches, subgraph exports, analytics files, reports);
- `backups` (`BACKUP_RETENTION_DAYS`, default 30): every object under `backups/` in the
  backups bucket — **except the last backup of each graph** that the graph registry names
  (`last_backup_key` of a `creating`, `active` or `orphaned` graph): a graph is never left
  without its newest backup, however old. (The bucket is versioned: a deleted backup's old version
  expires by the bucket's lifecycle rule.)

An object is past its retention when its `LastModified` is older than the run's `as_of`
minus the retention. Every listing is paginated; deletes go 1,000 keys a call
(`DeleteObjects`), and a key S3 reports it could not delete raises at the end (after the
others). A dry run counts what would go and deletes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from beatless.errors import BeatlessError
from beatless.graphs.registry import GraphStatus

DELETE_BATCH = 1000
BACKUPS_PREFIX = "backups/"
# Graphs whose last backup stays: those with a database, and orphans (their node is gone:
# the backup is the way back).
KEPT_STATUSES = (GraphStatus.CREATING, GraphStatus.ACTIVE, GraphStatus.ORPHANED)


class RetentionError(BeatlessError):
    """S3 refused to delete some keys (named); the rest were deleted."""


@dataclass
class KindCounts:
    examined: int = 0
    expired: int = 0
    kept_last_backup: int = 0
    deleted: int = 0
    deleted_bytes: int = 0


@dataclass
class RetentionResult:
    counts: dict[str, KindCounts] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)


def _objects(s3: Any, bucket: str, prefix: str = "") -> Iterator[dict[str, Any]]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def last_backups(graph_ids_and_keys: Iterable[tuple[str, str | None]]) -> set[str]:
    return {key for _, key in graph_ids_and_keys if key}


def expire(
    s3: Any,
    *,
    kind: str,
    bucket: str,
    prefix: str,
    cutoff: datetime,
    keep: set[str],
    dry_run: bool,
    result: RetentionResult,
) -> None:
    """Delete (or count, in a dry run) the objects under `prefix` older than `cutoff`, but `keep`."""
    counts = result.counts.setdefault(kind, KindCounts())
    batch: list[tuple[str, int]] = []
    for item in _objects(s3, bucket, prefix):
        counts.examined += 1
        if item["LastModified"] >= cutoff:
            continue
        if item["Key"] in keep:
            counts.kept_last_backup += 1
            continue
        counts.expired += 1
        batch.append((item["Key"], int(item.get("Size", 0))))
        if len(batch) == DELETE_BATCH:
            _delete(s3, bucket, batch, dry_run, counts, result)
            batch = []
    if batch:
        _delete(s3, bucket, batch, dry_run, counts, result)


def _delete(
    s3: Any,
    bucket: str,
    batch: list[tuple[str, int]],
    dry_run: bool,
    counts: KindCounts,
    result: RetentionResult,
) -> None:
    if dry_run:
        return
    sizes = dict(batch)
    answer = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": key} for key, _ in batch], "Quiet": True}
    )
    refused = {error["Key"] for error in answer.get("Errors", [])}
    result.failed.extend(f"s3://{bucket}/{key}" for key in sorted(refused))
    for key, size in sizes.items():
        if key not in refused:
            counts.deleted += 1
            counts.deleted_bytes += size


def apply_retention(
    s3: Any,
    registries: Any,
    *,
    staging_bucket: str,
    backup_bucket: str,
    staging_days: int,
    backup_days: int,
    as_of: datetime,
    dry_run: bool,
) -> RetentionResult:
    """Both kinds (see the module docstring). The caller raises `RetentionError` after
    publishing when `result.failed` names keys S3 refused to delete."""
    result = RetentionResult()
    expire(
        s3,
        kind="staging",
        bucket=staging_bucket,
        prefix="",
        cutoff=as_of - timedelta(days=staging_days),
        keep=set(),
        dry_run=dry_run,
        result=result,
    )
    keep = last_backups(
        (g.graph_id, g.last_backup_key) for g in registries.all_graphs() if g.status in KEPT_STATUSES
    )
    expire(
        s3,
        kind="backups",
        bucket=backup_bucket,
        prefix=BACKUPS_PREFIX,
        cutoff=as_of - timedelta(days=backup_days),
        keep=keep,
        dry_run=dry_run,
        result=result,
    )
    return result
