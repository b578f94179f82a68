"""The `ingestion_queue_processor` core: each complete upload batch that is not staged
yet is handed to the worker as one `stage_files` operation, once.

The uploads bucket's contract (the web tier writes it):

- the batch's files under any key (by convention `files/<graph id>/<batch id>/...`);
- last, its manifest `batches/<graph id>/<batch id>.json`:
  `{"files": [{"table", "key", "format"?}, ...]}` — its presence says the batch is complete.

A batch is staged once `stage_files` wrote its report (`ingest/<graph id>/<batch id>/report.json`
in the staging bucket, valid or not). A pending batch is sent as `beatless.stage_files` on the
`ingest` queue with task id uuid5(`stage_files:<graph id>/<batch id>`) and operation id
`stage_files:<graph id>:<batch id>`, through `beatless.queues.producer.send_once` (no
Celery import): replayed or concurrent runs enqueue each batch once (the marker lives a
day; a batch still not staged after that is sent again). Every listing is paginated.
A manifest that is not what the contract says is counted and logged (the uploader's
mistake must not fail every run); an S3 or Redis error raises.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from beatless.queues.producer import send_once
from beatless.queues.transport import TransportOptions

log = logging.getLogger("beatless.ingestion.queue")

# The catalogue's entry (beatless.operations.catalogue; a test keeps them equal).
STAGE_FILES_TASK = "beatless.stage_files"
INGEST_QUEUE = "ingest"
BATCHES_PREFIX = "batches/"
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NAMESPACE = uuid.UUID("5f0e7c1e-3a51-4b43-9a4a-6d1b7e0f2c11")


@dataclass(frozen=True)
class Batch:
    graph_id: str
    batch_id: str
    manifest_key: str

    @property
    def task_id(self) -> str:
        return str(uuid.uuid5(_NAMESPACE, f"stage_files:{self.graph_id}/{self.batch_id}"))

    @property
    def operation_id(self) -> str:
        return f"stage_files:{self.graph_id}:{self.batch_id}"


def batches(s3: Any, bucket: str) -> Iterator[Batch]:
    """Every batch manifest in the uploads bucket (paginated)."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=BATCHES_PREFIX):
        for item in page.get("Contents", []):
            key = item["Key"]
            parts = key[len(BATCHES_PREFIX) :].split("/")
            if len(parts) == 2 and parts[1].endswith(".json"):
                yield Batch(parts[0], parts[1].removesuffix(".json"), key)
            else:
                yield Batch("", "", key)  # not where a manifest goes: reported as malformed


def is_staged(s3: Any, bucket: str, batch: Batch) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=f"ingest/{batch.graph_id}/{batch.batch_id}/report.json")
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def read_files(s3: Any, bucket: str, batch: Batch) -> list[dict[str, str]] | None:
    """The manifest's files, or None when the manifest is not what the contract says."""
    if not (_ID.match(batch.graph_id) and _ID.match(batch.batch_id)):
        return None
    try:
        data = json.loads(s3.get_object(Bucket=bucket, Key=batch.manifest_key)["Body"].read())
    except ValueError:
        return None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list) or not files:
        return None
    clean = []
    for item in files:
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("table", "key")):
            return None
        clean.append({k: item[k] for k in ("table", "key", "format") if k in item})
    return clean


@dataclass
class Counts:
    batches: int = 0
    staged: int = 0
    enqueued: int = 0
    already_enqueued: int = 0
    malformed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def process(
    s3: Any,
    client: Any,
    transport: TransportOptions,
    *,
    uploads_bucket: str,
    staging_bucket: str,
    dry_run: bool,
    on_sent: Callable[[], object] | None = None,
) -> tuple[Counts, list[str]]:
    """Send every pending batch once; the counts and the operation ids sent (or, in a dry
    run, that would be sent). `on_sent()` follows each send (the worker monitor's wake)."""
    counts = Counts()
    sent: list[str] = []
    for batch in batches(s3, uploads_bucket):
        counts.batches += 1
        files = read_files(s3, uploads_bucket, batch)
        if files is None:
            counts.malformed += 1
            log.warning("upload batch manifest %s is not what the contract says: skipped", batch.manifest_key)
            continue
        if is_staged(s3, staging_bucket, batch):
            counts.staged += 1
            continue
        if dry_run:
            sent.append(batch.operation_id)
            continue
        params = {"graph_id": batch.graph_id, "batch_id": batch.batch_id, "files": files}
        kwargs = {"params": params, "operation_id": batch.operation_id}
        if send_once(client, transport, STAGE_FILES_TASK, batch.task_id, INGEST_QUEUE, kwargs=kwargs):
            counts.enqueued += 1
            sent.append(batch.operation_id)
            if on_sent is not None:
                on_sent()
        else:
            counts.already_enqueued += 1
    return counts, sent
