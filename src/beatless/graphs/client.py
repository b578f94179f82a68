"""A graph node's HTTP API from the caller's side (standard library only).

Every request carries the key in `X-Api-Key`. A 4xx/5xx answer raises
`NodeRequestError` with the node's status and its error (the node names the
field it refused); a node that cannot be reached raises `NodeUnreachableError`.
Used by the local runner today and by the worker's graph tasks.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from beatless.errors import BeatlessError, InvalidInputError

DEFAULT_TIMEOUT_SECONDS = 120.0


def _segment(graph_id: str) -> str:
    return urllib.parse.quote(graph_id, safe="")  # "a/query" stays one path segment


class NodeRequestError(BeatlessError):
    def __init__(self, method: str, path: str, status: int, error: Any) -> None:
        super().__init__(f"{method} {path}: {status} {error}")
        self.status = status
        self.error = error


class NodeUnreachableError(BeatlessError):
    pass


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A node never redirects; following one would send the key elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


class NodeClient:
    def __init__(self, endpoint: str, api_key: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        if urllib.parse.urlsplit(endpoint).scheme not in ("http", "https"):
            raise InvalidInputError("endpoint", f"must be http(s)://host:port, got {endpoint!r}")
        self.endpoint = endpoint.rstrip("/")
        self._api_key = api_key
        self.timeout = timeout

    def __repr__(self) -> str:  # never the key
        return f"NodeClient({self.endpoint!r})"

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.endpoint}{path}", data=data, method=method)
        request.add_header("X-Api-Key", self._api_key)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            detail_raw = error.read()
            try:
                detail: Any = json.loads(detail_raw)
            except ValueError:
                detail = detail_raw.decode(errors="replace")[:500]
            raise NodeRequestError(method, path, error.code, detail) from None
        except (urllib.error.URLError, OSError) as error:
            raise NodeUnreachableError(f"{method} {self.endpoint}{path}: {error}") from None
        try:
            answer: dict[str, Any] = json.loads(raw or b"{}")
        except ValueError:
            raise NodeRequestError(method, path, 200, f"not JSON: {raw[:200]!r}") from None
        return answer

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/health")

    def create(self, graph_id: str, schema: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/databases", {"graph_id": graph_id, "schema": schema})

    def delete(self, graph_id: str) -> dict[str, Any]:
        return self.request("DELETE", f"/databases/{_segment(graph_id)}")

    def load(
        self,
        graph_id: str,
        load_id: str,
        bucket: str,
        files: Sequence[tuple[str, str]],
        *,
        atomic: bool = False,
    ) -> dict[str, Any]:
        """COPY each `(table, key)` from `bucket` into the graph, in order (a retried
        `load_id` skips what the node already loaded; `atomic`: all or nothing)."""
        body = {
            "load_id": load_id,
            "bucket": bucket,
            "files": [{"table": t, "key": k} for t, k in files],
            "atomic": atomic,
        }
        return self.request("POST", f"/databases/{_segment(graph_id)}/load", body)

    def query(
        self,
        graph_id: str,
        query: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        limit: int | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"query": query, "parameters": dict(parameters or {})}
        if limit is not None:
            body["limit"] = limit
        return self.request("POST", f"/databases/{_segment(graph_id)}/query", body)

    def backup(self, graph_id: str, bucket: str, key: str) -> dict[str, Any]:
        return self.request("POST", f"/databases/{_segment(graph_id)}/backup", {"bucket": bucket, "key": key})

    def export(
        self,
        graph_id: str,
        bucket: str,
        prefix: str,
        tables: Sequence[str],
        filters: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """`tables` (filtered) as Parquet files under `prefix`: the subset's schema and files."""
        body = {"bucket": bucket, "prefix": prefix, "tables": list(tables), "filters": dict(filters or {})}
        return self.request("POST", f"/databases/{_segment(graph_id)}/export", body)

    def set_property(
        self, graph_id: str, table: str, prop: str, kind: str, bucket: str, key: str
    ) -> dict[str, Any]:
        """Set `table.prop` from a Parquet file of `key`, `value` in S3 (added as `kind` if new)."""
        body = {"table": table, "property": prop, "type": kind, "bucket": bucket, "key": key}
        return self.request("POST", f"/databases/{_segment(graph_id)}/properties", body)

    def merge(
        self,
        graph_id: str,
        table: str,
        merges: Sequence[Mapping[str, Any]],
        aliases: Sequence[Mapping[str, Any]],
        aliases_property: str = "aliases",
    ) -> dict[str, Any]:
        """Merge nodes of `table` (`[{"keep", "merged": [...]}]`), setting the kept ones' aliases."""
        body = {
            "table": table,
            "merges": [dict(m) for m in merges],
            "aliases": [dict(a) for a in aliases],
            "aliases_property": aliases_property,
        }
        return self.request("POST", f"/databases/{_segment(graph_id)}/merge", body)

    def restore(self, graph_id: str, bucket: str, key: str, sha256: str | None = None) -> dict[str, Any]:
        body = {"bucket": bucket, "key": key, **({"sha256": sha256} if sha256 else {})}
        return self.request("POST", f"/databases/{_segment(graph_id)}/restore", body)


def api_key_from_env(env: Mapping[str, str], secretsmanager: Callable[[], Any]) -> str:
    """The key of every node request: `GRAPH_API_KEY_SECRET_ARN` (Secrets Manager; its
    `SecretString` is the key) or, locally, `GRAPH_API_KEY` — exactly one of them."""
    from beatless.secrets import CachedSecret
    from beatless.settings import env_str

    arn, key = env_str(env, "GRAPH_API_KEY_SECRET_ARN"), env_str(env, "GRAPH_API_KEY")
    if (arn is None) == (key is None):
        raise InvalidInputError("GRAPH_API_KEY_SECRET_ARN", "set exactly one of it and GRAPH_API_KEY")
    return key or CachedSecret(secretsmanager(), str(arn)).get()
