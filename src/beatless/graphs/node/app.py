"""The graph node's HTTP API (Starlette), one process per instance: `beatless graph-node`.

Every request carries the API key in `X-Api-Key` (compared in constant time;
401 without it). Bodies are JSON; a bad one gets 400 naming the field and
changes nothing.

- `GET /health`: `{"status": "healthy", "capacity", "database_count",
  "disk_used_bytes", "disk_total_bytes", "version"}`; opens no database;
- `GET /databases`: the graphs on this node and their sizes;
- `POST /databases` `{"graph_id", "schema"}` (`beatless.graphs.schema`): 201, 409 if it exists;
- `GET /databases/{id}`: its size, tables (columns, row counts) and schema;
- `DELETE /databases/{id}`: removes the database;
- `POST /databases/{id}/query` `{"query", "parameters"?, "limit"?, "timeout_ms"?}`:
  columns, rows, `truncated`; read-only;
- `POST /databases/{id}/load` `{"load_id", "bucket", "files": [{"table", "key",
  "format"?}], "atomic"?}`: each file fetched from S3, then COPYed (`atomic`: all or
  nothing); 409 while another load runs, 413 when it could pass the size cap;
- `POST /databases/{id}/backup` `{"bucket", "key"}`: the archive in S3, its SHA-256
  in the object's metadata and in the graph registry;
- `POST /databases/{id}/restore` `{"bucket", "key", "sha256"?}`: verified, then the
  database replaced (or created);
- `POST /databases/{id}/export` `{"bucket", "prefix", "tables", "filters"?}`: the tables
  (a relationship with its ends), optionally filtered by property values of node tables,
  written by the engine's `COPY ... TO` as Parquet (writes held: one consistent cut) and
  uploaded to `<prefix><table>.parquet`; answers the subset's schema and the files in
  load order with their row counts;
- `POST /databases/{id}/properties` `{"table", "property", "type", "bucket", "key"}`: a
  Parquet file of `key`, `value` sets that property (added to the node table if new) of
  the rows with those primary keys, in one bulk statement (analytics' results);
- `POST /databases/{id}/merge` `{"table", "merges": [{"keep", "merged": [...]}],
  "aliases_property"?, "aliases"?: [{"keep", "names"}]}`: entity resolution's merges in one
  transaction —
  every relationship of a merged node recreated on the kept one, the merged nodes
  deleted, the kept nodes' aliases set.

Errors: 400 bad input (`{"error": {"field", "message"}}`), 401, 404 no such
graph, 409 exists / busy, 413 size cap, 422 a backup that does not verify.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import shutil
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from beatless.errors import InvalidInputError
from beatless.graphs.node.backup import BackupIntegrityError
from beatless.graphs.node.databases import (
    FORMATS,
    BusyError,
    DatabaseHost,
    ExistsError,
    LoadFile,
    NotFoundError,
    SizeCapError,
)
from beatless.graphs.node.settings import NodeSettings
from beatless.graphs.registry import Registries
from beatless.graphs.schema import GraphSchema

log = logging.getLogger("beatless.graph_node")
API_KEY_HEADER = "x-api-key"
SHA256_METADATA = "sha256"  # S3 user metadata key of a backup object


def node_version() -> str:
    with contextlib.suppress(PackageNotFoundError):
        return version("beatless")
    return "unknown"


class Node:
    """What the routes use: the settings, the databases, S3, and the registries if configured."""

    def __init__(
        self, settings: NodeSettings, api_key: str, *, s3: Any, registries: Registries | None = None
    ) -> None:
        self.settings = settings
        self.api_key = api_key.encode()
        self.host = DatabaseHost(settings)
        self.s3 = s3
        self.registries = registries
        self.version = node_version()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # -- registry ----------------------------------------------------------------------

    def start(self) -> None:
        if self.registries is None:
            return
        s = self.settings
        self.registries.register(
            s.instance_id,
            endpoint=s.endpoint,
            capacity=s.capacity,
            at=datetime.now(UTC),
            asg_name=s.asg_name,
            version=self.version,
        )
        self.beat()
        self._heartbeat = threading.Thread(target=self._beat_forever, name="heartbeat", daemon=True)
        self._heartbeat.start()

    def beat(self) -> None:
        """Heartbeat (disk figures) and every graph's size into the registries."""
        assert self.registries is not None
        used, total = self.host.disk()
        self.registries.heartbeat(
            self.settings.instance_id, at=datetime.now(UTC), disk_used_bytes=used, disk_total_bytes=total
        )
        for graph_id in self.host.graph_ids():
            try:
                self.registries.record_size(
                    graph_id, self.host.size(graph_id), instance_id=self.settings.instance_id
                )
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise  # a graph without a registry row (local-only) or owned by another: not ours

    def _beat_forever(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_seconds):
            try:
                self.beat()
            except (ClientError, BotoCoreError, OSError):
                log.exception("heartbeat failed; trying again in %s s", self.settings.heartbeat_seconds)

    def stop(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(5)
        self.host.close_all()


# -- request handling ---------------------------------------------------------------------


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"message": message}
    if field is not None:
        body["field"] = field
    return JSONResponse({"error": body}, status_code=status)


async def _body(request: Request, *, required: set[str], optional: set[str]) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidInputError("body", f"is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise InvalidInputError("body", "must be a JSON object")
    unknown = sorted(set(data) - required - optional)
    if unknown:
        raise InvalidInputError(unknown[0], "unknown key")
    for key in sorted(required):
        if key not in data:
            raise InvalidInputError(key, "is required")
    return data


def _string(data: Mapping[str, Any], key: str, field: str | None = None) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidInputError(field or key, f"must be a non-empty string, got {value!r}")
    return value


def _bounded(data: Mapping[str, Any], key: str, default: int, maximum: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidInputError(key, f"must be an integer from 1 to {maximum}, got {value!r}")
    return value


async def health(request: Request) -> Response:
    node: Node = request.app.state.node
    host, settings = node.host, node.settings
    used, total = host.disk()
    return JSONResponse(
        {
            "status": "healthy",
            "capacity": settings.capacity,
            "database_count": len(host.graph_ids()),
            "disk_used_bytes": used,
            "disk_total_bytes": total,
            "version": node.version,
            "instance_id": settings.instance_id,
        }
    )


def databases(request: Request) -> Response:
    host = request.app.state.node.host
    return JSONResponse(
        {"databases": [{"graph_id": g, "size_bytes": host.size(g)} for g in host.graph_ids()]}
    )


async def create(request: Request) -> Response:
    host = request.app.state.node.host
    data = await _body(request, required={"graph_id", "schema"}, optional=set())
    graph_id = _string(data, "graph_id")
    schema = GraphSchema.parse(data["schema"])
    await _threaded(host.create, graph_id, schema)
    return JSONResponse({"graph_id": graph_id, "schema": schema.as_dict()}, status_code=201)


def describe(request: Request) -> Response:
    host = request.app.state.node.host
    graph_id = request.path_params["graph_id"]
    tables = host.tables(graph_id)
    schema = host.schema(graph_id).as_dict()
    return JSONResponse(
        {"graph_id": graph_id, "size_bytes": host.size(graph_id), "tables": tables, "schema": schema}
    )


def delete(request: Request) -> Response:
    host = request.app.state.node.host
    graph_id = request.path_params["graph_id"]
    host.delete(graph_id)
    return JSONResponse({"deleted": graph_id})


async def query(request: Request) -> Response:
    node: Node = request.app.state.node
    host, settings = node.host, node.settings
    data = await _body(request, required={"query"}, optional={"parameters", "limit", "timeout_ms"})
    parameters = data.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInputError("parameters", "must be an object of name -> value")
    limit = _bounded(data, "limit", settings.query_row_limit, settings.query_row_limit)
    timeout_ms = _bounded(data, "timeout_ms", settings.query_timeout_ms, settings.query_timeout_ms)
    result = await _threaded(
        host.query,
        request.path_params["graph_id"],
        data["query"],
        parameters,
        limit=limit,
        timeout_ms=timeout_ms,
    )
    return JSONResponse(result)


async def load(request: Request) -> Response:
    node: Node = request.app.state.node
    host = node.host
    data = await _body(request, required={"load_id", "bucket", "files"}, optional={"atomic"})
    atomic = data.get("atomic", False)
    if not isinstance(atomic, bool):
        raise InvalidInputError("atomic", f"must be true or false, got {atomic!r}")
    bucket = _string(data, "bucket")
    raw = data["files"]
    if not isinstance(raw, list) or not raw:
        raise InvalidInputError("files", "must be a non-empty list")
    files = [_load_file(node, bucket, item, f"files[{i}]") for i, item in enumerate(raw)]

    def fetch(item: LoadFile, path: Path) -> None:
        node.s3.download_file(bucket, item.name, str(path))

    result = await _threaded(
        host.load, request.path_params["graph_id"], _string(data, "load_id"), files, fetch, atomic=atomic
    )
    return JSONResponse(result)


async def backup(request: Request) -> Response:
    node: Node = request.app.state.node
    host = node.host
    data = await _body(request, required={"bucket", "key"}, optional=set())
    bucket, key = _string(data, "bucket"), _string(data, "key")
    graph_id = request.path_params["graph_id"]
    archive = host.staging_dir() / "backup.lbbk"
    try:
        packed = await _threaded(host.backup, graph_id, archive)
        await _threaded(
            node.s3.upload_file,
            str(archive),
            bucket,
            key,
            ExtraArgs={"Metadata": {SHA256_METADATA: packed.sha256}, "ContentType": "application/zstd"},
        )
    finally:
        archive.unlink(missing_ok=True)
        archive.parent.rmdir()
    if node.registries is not None:
        with contextlib.suppress(ClientError):  # a local-only graph has no row to record it in
            node.registries.record_backup(graph_id, key, packed.sha256)
    return JSONResponse(
        {
            "graph_id": graph_id,
            "bucket": bucket,
            "key": key,
            "sha256": packed.sha256,
            "stored_bytes": packed.stored_bytes,
            "logical_bytes": packed.logical_bytes,
            "data_bytes": packed.data_bytes,
        }
    )


async def restore(request: Request) -> Response:
    node: Node = request.app.state.node
    host = node.host
    data = await _body(request, required={"bucket", "key"}, optional={"sha256"})
    bucket, key = _string(data, "bucket"), _string(data, "key")
    graph_id = request.path_params["graph_id"]
    try:
        head = node.s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        raise InvalidInputError("key", f"no backup s3://{bucket}/{key}: {error}") from None
    recorded = head.get("Metadata", {}).get(SHA256_METADATA)
    if not recorded:
        raise InvalidInputError("key", f"s3://{bucket}/{key} has no sha256 metadata: not a backup")
    expected = data.get("sha256")
    if expected is not None and expected != recorded:
        raise BackupIntegrityError(f"the object's recorded sha256 {recorded} is not the expected {expected}")

    def open_body() -> Any:
        # Opened under the database's writer lock, so a body never waits unread behind a load.
        try:
            return node.s3.get_object(Bucket=bucket, Key=key, IfMatch=head["ETag"])["Body"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "PreconditionFailed":
                raise BackupIntegrityError(
                    f"s3://{bucket}/{key} changed while it was being restored"
                ) from None
            raise InvalidInputError("key", f"cannot read s3://{bucket}/{key}: {error}") from None

    # One pass from S3 to disk: hashed, decompressed and written as it arrives (no staged
    # copy of the archive); the database is replaced only after the digest matched.
    size = await _threaded(host.restore, graph_id, open_body, sha256=recorded)
    return JSONResponse({"graph_id": graph_id, "sha256": recorded, "size_bytes": size})


async def export(request: Request) -> Response:
    node: Node = request.app.state.node
    host = node.host
    data = await _body(request, required={"bucket", "prefix", "tables"}, optional={"filters"})
    bucket, prefix = _string(data, "bucket"), _string(data, "prefix")
    graph_id = request.path_params["graph_id"]
    staging = host.staging_dir()
    try:
        schema, files = await _threaded(
            host.export, graph_id, data["tables"], data.get("filters") or {}, staging
        )
        uploaded = []
        for item in files:
            key = f"{prefix}{item['table']}.parquet"
            try:
                await _threaded(node.s3.upload_file, str(item["path"]), bucket, key)
            except (ClientError, BotoCoreError, S3UploadFailedError) as error:
                raise InvalidInputError("bucket", f"cannot write s3://{bucket}/{key}: {error}") from None
            uploaded.append({"table": item["table"], "key": key, "rows": item["rows"]})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return JSONResponse(
        {"graph_id": graph_id, "bucket": bucket, "schema": schema.as_dict(), "files": uploaded}
    )


async def set_property(request: Request) -> Response:
    node: Node = request.app.state.node
    host = node.host
    data = await _body(request, required={"table", "property", "type", "bucket", "key"}, optional=set())
    bucket, key = _string(data, "bucket"), _string(data, "key")
    staging = host.staging_dir()

    def fetch(path: Path) -> None:
        try:
            node.s3.download_file(bucket, key, str(path))
        except (ClientError, BotoCoreError) as error:
            raise InvalidInputError("key", f"cannot read s3://{bucket}/{key}: {error}") from None

    try:
        result = await _threaded(
            host.set_property,
            request.path_params["graph_id"],
            _string(data, "table"),
            _string(data, "property"),
            _string(data, "type"),
            staging / "values.parquet",
            fetch,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return JSONResponse(result)


async def merge(request: Request) -> Response:
    host = request.app.state.node.host
    data = await _body(request, required={"table", "merges"}, optional={"aliases_property", "aliases"})
    merges = data["merges"]
    if not isinstance(merges, list) or not all(
        isinstance(m, dict) and set(m) == {"keep", "merged"} and isinstance(m["merged"], list) for m in merges
    ):
        raise InvalidInputError("merges", 'must be a list of {"keep": key, "merged": [keys]}')
    aliases = data.get("aliases") or []
    if not isinstance(aliases, list) or not all(
        isinstance(a, dict) and set(a) == {"keep", "names"} and isinstance(a["names"], str) for a in aliases
    ):
        raise InvalidInputError("aliases", 'must be a list of {"keep": key, "names": text}')
    result = await _threaded(
        host.merge_nodes,
        request.path_params["graph_id"],
        _string(data, "table"),
        merges,
        data.get("aliases_property", "aliases"),
        aliases,
    )
    return JSONResponse(result)


def build_app(node: Node) -> Starlette:
    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/databases", databases, methods=["GET"]),
        Route("/databases", create, methods=["POST"]),
        Route("/databases/{graph_id}", describe, methods=["GET"]),
        Route("/databases/{graph_id}", delete, methods=["DELETE"]),
        Route("/databases/{graph_id}/query", query, methods=["POST"]),
        Route("/databases/{graph_id}/load", load, methods=["POST"]),
        Route("/databases/{graph_id}/backup", backup, methods=["POST"]),
        Route("/databases/{graph_id}/restore", restore, methods=["POST"]),
        Route("/databases/{graph_id}/export", export, methods=["POST"]),
        Route("/databases/{graph_id}/properties", set_property, methods=["POST"]),
        Route("/databases/{graph_id}/merge", merge, methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        node.start()
        try:
            yield
        finally:
            node.stop()  # SIGTERM: uvicorn stops taking requests, then every database closes

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=_handlers())
    app.state.node = node
    app.add_middleware(ApiKeyMiddleware, api_key=node.api_key)
    return app


class ApiKeyMiddleware(BaseHTTPMiddleware):
    def __init__(self, app: Any, api_key: bytes) -> None:
        super().__init__(app)
        self.api_key = api_key

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        given = request.headers.get(API_KEY_HEADER, "").encode()
        if not hmac.compare_digest(given, self.api_key):
            return _error(401, "a valid X-Api-Key header is required")
        return await call_next(request)


def _handlers() -> dict[Any, Callable[[Request, Exception], Response]]:
    def bad_input(request: Request, error: Exception) -> Response:
        assert isinstance(error, InvalidInputError)
        return _error(400, str(error), error.field)

    def status(code: int) -> Callable[[Request, Exception], Response]:
        return lambda request, error: _error(code, str(error))

    return {
        InvalidInputError: bad_input,
        NotFoundError: status(404),
        ExistsError: status(409),
        BusyError: status(409),
        SizeCapError: status(413),
        BackupIntegrityError: status(422),
    }


def _load_file(node: Node, bucket: str, item: Any, field: str) -> LoadFile:
    if not isinstance(item, dict):
        raise InvalidInputError(field, "must be an object {table, key, format?}")
    unknown = sorted(set(item) - {"table", "key", "format"})
    if unknown:
        raise InvalidInputError(f"{field}.{unknown[0]}", "unknown key")
    table, key = _string(item, "table", f"{field}.table"), _string(item, "key", f"{field}.key")
    fmt = item.get("format") or next(
        (f for f, suffix in FORMATS.items() if key.lower().endswith(suffix)), None
    )
    if fmt not in FORMATS:
        raise InvalidInputError(
            f"{field}.format", f"must be one of {', '.join(FORMATS)} (or a key ending so)"
        )
    try:
        head = node.s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        raise InvalidInputError(f"{field}.key", f"s3://{bucket}/{key} cannot be read: {error}") from None
    return LoadFile(table=table, name=key, format=str(fmt), size=int(head["ContentLength"]))


async def _threaded(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Blocking engine and S3 work off the event loop."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(call, *args, **kwargs)


def wait_until_healthy(url: str, api_key: str, timeout: float = 30.0) -> None:
    """For starters of a node process (the local runner, tests): until /health answers."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            request = urllib.request.Request(f"{url}/health", headers={"X-Api-Key": api_key})
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"graph node at {url} did not become healthy within {timeout:g} s")
        time.sleep(0.1)
