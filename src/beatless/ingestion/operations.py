"""The cores of the ingestion operations (the worker's `ingest` queue).

- `stage_files`: the batch's uploaded files (uploads bucket) fetched to local disk, the
  graph's rows that the batch could collide with exported by its node, everything
  checked in DuckDB (`beatless.ingestion.validation`); a valid batch is written as clean
  Parquet to the staging bucket under `ingest/<graph id>/<batch id>/` with its manifest
  (`manifest.json`: the files in load order, node tables first). The report is the
  result either way — every problem exactly, at most N per rule with the totals — and
  is written beside (`report.json`, valid or not); an invalid batch stages nothing else.
- `materialize`: a staged, valid batch loaded by the graph's node in one atomic load
  (all or nothing; a retried attempt resumes the same load id).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from beatless.errors import InvalidInputError
from beatless.graphs.operations import placed_node
from beatless.graphs.schema import GraphSchema, NodeTable, RelTable
from beatless.ingestion.validation import StagedFile, Validation
from beatless.operations.runtime import Operation

GIB = 2**30


def batch_prefix(graph_id: str, batch_id: str) -> str:
    return f"ingest/{graph_id}/{batch_id}/"


def report_key(graph_id: str, batch_id: str) -> str:
    return f"{batch_prefix(graph_id, batch_id)}report.json"


def upload_bytes(resources: Any, params: dict[str, Any]) -> float:
    """GiB of the batch's uploaded files (HEAD of each; the estimate of `stage_files`)."""
    s3, bucket = resources.s3(), resources.uploads_bucket()
    total = 0
    for i, item in enumerate(params["files"]):
        try:
            total += int(s3.head_object(Bucket=bucket, Key=item["key"])["ContentLength"])
        except ClientError as error:
            raise InvalidInputError(
                f"params.files[{i}].key", f"no upload s3://{bucket}/{item['key']}: {error}"
            ) from None
    return total / GIB


def stage_files(op: Operation, params: dict[str, Any]) -> dict[str, Any]:
    resources = op.resources
    graph_id, batch_id = params["graph_id"], params["batch_id"]
    _graph, node = placed_node(resources, graph_id)
    described = node.request("GET", f"/databases/{graph_id}")
    schema = GraphSchema.parse(described["schema"])
    for i, item in enumerate(params["files"]):
        if schema.table(item["table"]) is None:
            raise InvalidInputError(
                f"params.files[{i}].table", f"graph {graph_id!r} has no table {item['table']!r}"
            )
    work = Path(tempfile.mkdtemp(prefix="beatless-ingest-", dir=resources.work_dir()))
    try:
        op.stage("fetch", 5, f"fetching {len(params['files'])} file(s)")
        files = _fetch(resources, params["files"], work)
        input_bytes = sum(f.path.stat().st_size for f in files)
        op.stage("existing", 25, "exporting the graph's keys the batch could collide with")
        existing = _existing(op, node, graph_id, schema, described["tables"], params["files"], work)
        op.stage("validate", 40, "checking the files against the graph's schema")
        out = work / "out"
        out.mkdir()
        with Validation(schema, work_dir=out, limit_per_rule=params["limit_per_rule"]) as validation:
            report = validation.run(files, existing)
        staged = None
        if report.valid:
            op.stage("stage", 80, "writing the clean files to staging")
            staged = _stage(
                resources, graph_id, batch_id, op.operation_id, schema, report.outputs, report.rows
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "graph_id": graph_id,
        "batch_id": batch_id,
        **report.as_dict(),
        "manifest": staged,
        "units": input_bytes / GIB,
    }
    # The batch's report, valid or not: what the uploader reads, and the mark that it was staged.
    resources.s3().put_object(
        Bucket=resources.staging_bucket(),
        Key=report_key(graph_id, batch_id),
        Body=json.dumps({**result, "operation_id": op.operation_id}).encode(),
        ContentType="application/json",
    )
    return result


def _fetch(resources: Any, items: list[dict[str, Any]], work: Path) -> list[StagedFile]:
    s3, bucket = resources.s3(), resources.uploads_bucket()
    fetched = []
    for i, item in enumerate(items):
        fmt = item.get("format") or ("csv" if item["key"].lower().endswith(".csv") else "parquet")
        path = work / f"{i}.{fmt}"
        try:
            s3.download_file(bucket, item["key"], str(path))
        except ClientError as error:
            raise InvalidInputError(
                f"params.files[{i}].key", f"cannot read s3://{bucket}/{item['key']}: {error}"
            ) from None
        fetched.append(StagedFile(item["table"], item["key"], path, fmt))
    return fetched


def _existing(
    op: Operation,
    node: Any,
    graph_id: str,
    schema: GraphSchema,
    tables: dict[str, Any],
    items: list[dict[str, Any]],
    work: Path,
) -> dict[str, Path]:
    """The graph's rows of the node tables the batch stages or points at, where it has any."""
    wanted: set[str] = set()
    for item in items:
        table = schema.table(item["table"])
        if isinstance(table, NodeTable):
            wanted.add(table.name)
        elif isinstance(table, RelTable):
            wanted |= {table.source, table.target}
    holding = sorted(name for name in wanted if tables.get(name, {}).get("rows", 0) > 0)
    if not holding:
        return {}
    resources = op.resources
    bucket = resources.staging_bucket()
    prefix = f"{batch_prefix(graph_id, 'existing')}{op.operation_id.replace(':', '-')}/"
    exported = node.export(graph_id, bucket, prefix, holding)
    paths = {}
    s3 = resources.s3()
    for item in exported["files"]:
        path = work / f"existing-{item['table']}.parquet"
        s3.download_file(bucket, item["key"], str(path))
        s3.delete_object(Bucket=bucket, Key=item["key"])
        paths[item["table"]] = path
    return paths


def _stage(
    resources: Any,
    graph_id: str,
    batch_id: str,
    operation_id: str,
    schema: GraphSchema,
    outputs: dict[str, list[StagedFile]],
    rows: dict[str, int],
) -> str:
    """Each table's files into staging — an upload that was in load form already by a
    server-side copy, a written one by upload — and the manifest listing them in load
    order (node tables first)."""
    s3, bucket, uploads = resources.s3(), resources.staging_bucket(), resources.uploads_bucket()
    prefix = batch_prefix(graph_id, batch_id)
    order = [t.name for t in schema.nodes if t.name in outputs] + [
        t.name for t in schema.relationships if t.name in outputs
    ]
    files = []
    for table in order:
        for i, item in enumerate(outputs[table]):
            key = f"{prefix}{table}-{i}.parquet"
            if item.written:
                s3.upload_file(str(item.path), bucket, key)
            else:  # the upload itself, in load form already
                _copy(s3, uploads, item.name, bucket, key, item.path.stat().st_size)
            files.append({"table": table, "key": key})
    manifest = {
        "graph_id": graph_id,
        "batch_id": batch_id,
        "operation_id": operation_id,
        "rows": rows,
        "files": files,
    }
    key = f"{prefix}manifest.json"
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(manifest).encode(), ContentType="application/json")
    return key


SINGLE_COPY_LIMIT = 5 * 2**30  # CopyObject's own limit; larger objects copy in parts


def _copy(s3: Any, source_bucket: str, source_key: str, bucket: str, key: str, size: int) -> None:
    source = {"Bucket": source_bucket, "Key": source_key}
    if size < SINGLE_COPY_LIMIT:
        s3.copy_object(CopySource=source, Bucket=bucket, Key=key)
    else:
        s3.copy(source, bucket, key)


def materialize(op: Operation, params: dict[str, Any]) -> dict[str, Any]:
    resources = op.resources
    graph_id, batch_id = params["graph_id"], params["batch_id"]
    _graph, node = placed_node(resources, graph_id)
    bucket = resources.staging_bucket()
    key = f"{batch_prefix(graph_id, batch_id)}manifest.json"
    try:
        manifest = json.loads(resources.s3().get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError:
        raise InvalidInputError(
            "params.batch_id",
            f"batch {batch_id!r} of {graph_id!r} is not staged (run stage_files; it must validate)",
        ) from None
    files = [(f["table"], f["key"]) for f in manifest["files"]]
    op.stage("load", 10, f"loading {len(files)} file(s) into {graph_id}, all or nothing")
    loaded = node.load(graph_id, f"ingest-{batch_id}", bucket, files, atomic=True)
    staged_rows = sum(manifest["rows"].values())
    return {
        "graph_id": graph_id,
        "batch_id": batch_id,
        "files": len(files),
        "staged_rows": staged_rows,
        "rows": loaded["rows"],
        "units": staged_rows / 1_000_000,
    }
