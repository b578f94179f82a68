"""The task API on this machine: an HTTP server that turns each request into the API
Gateway HTTP API (payload 2.0) event the Lambda receives and answers with what the same
handler (`TaskHttpApp.handle`) returns — one code path.

Two things only the server does:
- authorization: `Authorization: Bearer <token>` (compared in constant time; in AWS the
  HTTP API's IAM authorizer does it before the Lambda runs);
- server-sent events: `GET /tasks/{id}/events` with `Accept: text/event-stream` streams
  the task's progress (`id:` = the stream position, `event: progress`, `data:` = the
  event as JSON), resuming after `Last-Event-ID` (or `?after=`), with a comment every
  15 s to keep proxies open, and ends with `event: end` once the task finished. It reads
  the same core (`TaskApi.events`) the polling route does.
"""

from __future__ import annotations

import base64
import hmac
import json
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg

from beatless.api.app import TaskHttpApp
from beatless.api.service import BrokerUnavailableError, NotFoundError, TaskApi
from beatless.jobs import FUNCTION_LIMITS
from beatless.local.context import LocalContext

FUNCTION_NAME = "task_api"
# The deployed function's memory and timeout: each request's context has its deadline.
FUNCTION_LIMIT = (FUNCTION_LIMITS[FUNCTION_NAME].memory_mb, FUNCTION_LIMITS[FUNCTION_NAME].timeout_seconds)
SSE_POLL_SECONDS = 0.1
SSE_KEEPALIVE_SECONDS = 15.0
MAX_BODY_BYTES = 1_000_000


def http_api_event(
    method: str, target: str, headers: dict[str, str], body: bytes, source_ip: str = "127.0.0.1"
) -> dict[str, Any]:
    """The HTTP API payload 2.0 event for one request (`target`: path and query)."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        text, encoded = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.path,
        "rawQueryString": parts.query,
        "headers": lowered,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": lowered.get("host", "localhost"),
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": parts.path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": lowered.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": encoded,
    }
    if query:
        event["queryStringParameters"] = {name: ",".join(values) for name, values in query.items()}
    if body:
        event["body"] = text
    if "cookie" in lowered:
        event["cookies"] = [c.strip() for c in lowered["cookie"].split(";") if c.strip()]
    return event


class TaskApiServer:
    """`TaskHttpApp` behind a threaded HTTP server on `host:port` (0: a free port)."""

    def __init__(
        self,
        app: TaskHttpApp,
        api: Callable[[], TaskApi],
        token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if len(token) < 16:
            raise ValueError("the API token must be at least 16 characters")
        self.app, self.api, self.token = app, api, token
        self.httpd = ThreadingHTTPServer((host, port), _handler_class(self))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.stopping = threading.Event()
        # One request at a time through the handler: `TaskApi` holds one database connection (as
        # a Lambda does), which threads must not share. SSE streams take it per poll only.
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> TaskApiServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="task-api", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> TaskApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer ") :].encode(), self.token.encode())


def _handler_class(server: TaskApiServer) -> type[BaseHTTPRequestHandler]:
    return type("TaskApiHandler", (_RequestHandler,), {"api_server": server})


class _RequestHandler(BaseHTTPRequestHandler):
    api_server: TaskApiServer  # set on the subclass each server makes
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes: with Nagle's algorithm the second waits for
    # the client's delayed ACK (40 ms on Linux loopback).
    disable_nagle_algorithm = True
    server_version = "beatless-task-api"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no access log on stderr

    def _dispatch(self) -> None:
        length = self.headers.get("Content-Length")
        try:
            size = int(length) if length else 0
        except ValueError:
            return self._send_json(400, {"error": {"field": "Content-Length", "message": "not a number"}})
        if size > MAX_BODY_BYTES or size < 0:
            return self._send_json(
                413, {"error": {"field": "body", "message": f"at most {MAX_BODY_BYTES} bytes"}}
            )
        body = self.rfile.read(size) if size else b""
        if not self.api_server.authorized(self.headers.get("Authorization")):
            return self._send_json(
                401,
                {"error": {"field": "Authorization", "message": "a bearer token is required"}},
                {"WWW-Authenticate": 'Bearer realm="beatless"'},
            )
        path = urlsplit(self.path).path
        if (
            self.command == "GET"
            and path.startswith("/tasks/")
            and path.endswith("/events")
            and "text/event-stream" in (self.headers.get("Accept") or "")
        ):
            return self._stream_events(path.split("/")[2])
        event = http_api_event(
            self.command, self.path, dict(self.headers.items()), body, self.client_address[0]
        )
        try:
            with self.api_server.lock:
                answer = self.api_server.app.handle(event, LocalContext(FUNCTION_NAME, *FUNCTION_LIMIT))
        except Exception:  # as API Gateway answers a Lambda that raised; the traceback goes to the log
            traceback.print_exc()
            return self._send_json(500, {"error": {"field": None, "message": "internal error"}})
        raw = answer.get("body") or ""
        payload = base64.b64decode(raw) if answer.get("isBase64Encoded") else raw.encode()
        headers = dict(answer.get("headers") or {})
        for name, values in (answer.get("multiValueHeaders") or {}).items():
            headers[name] = ", ".join(values)
        self._send(int(answer["statusCode"]), payload, headers)

    def __getattr__(self, name: str) -> Any:
        # Every method (do_GET, do_QUERY, ...) goes to the handler: it answers 405, with
        # Allow, for those a path lacks.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in {"content-length", "connection", "transfer-encoding"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _stream_events(self, task_id: str) -> None:
        from beatless.errors import InvalidInputError

        query = parse_qs(urlsplit(self.path).query)
        after = self.headers.get("Last-Event-ID") or next(iter(query.get("after", [])), None)
        try:
            page = self._page(task_id, after)
        except InvalidInputError as error:  # as the JSON route answers: unknown task, bad position
            status = 404 if isinstance(error, NotFoundError) else 422
            return self._send_json(status, {"error": {"field": error.field, "message": error.problem}})
        except Exception as error:  # Redis, PostgreSQL, the environment: as the JSON route answers
            traceback.print_exc()
            status = 503 if isinstance(error, (BrokerUnavailableError, psycopg.OperationalError)) else 500
            return self._send_json(
                status, {"error": {"field": None, "message": "the task API cannot answer now"}}
            )
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        quiet_since = time.monotonic()
        try:
            while not self.api_server.stopping.is_set():
                for item in page.events:
                    data = json.dumps(item.model_dump(mode="json"))
                    self.wfile.write(f"id: {item.id}\nevent: progress\ndata: {data}\n\n".encode())
                    quiet_since = time.monotonic()
                if page.finished:
                    end = json.dumps({"task_id": page.task_id, "state": page.state})
                    self.wfile.write(f"event: end\ndata: {end}\n\n".encode())
                    break
                if time.monotonic() - quiet_since > SSE_KEEPALIVE_SECONDS:
                    self.wfile.write(b": keep-alive\n\n")
                    quiet_since = time.monotonic()
                self.wfile.flush()
                time.sleep(SSE_POLL_SECONDS)
                page = self._page(task_id, page.next_after)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away
        except Exception:  # the stream ends; the client reconnects with Last-Event-ID
            traceback.print_exc()

    def _page(self, task_id: str, after: str | None) -> Any:
        with self.api_server.lock:
            return self.api_server.api().events(task_id, after)
