"""A stand-in for the Lambda Invoke API (not shipped): the one AWS call moto cannot serve
without Docker. It speaks the real protocol — `POST /2015-03-31/functions/{name}/invocations`
with `X-Amz-Invocation-Type` — so a real boto3 Lambda client reaches it through
`AWS_ENDPOINT_URL_LAMBDA`, and it runs the real handler registered for the function (an
`Event` invocation on a thread of its own, answered 202 at once, as Lambda does)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from tests.support.lambda_context import FakeLambdaContext

PREFIX = "/2015-03-31/functions/"


@dataclass
class Invocation:
    function: str
    invocation_type: str
    payload: Any
    result: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class LambdaEndpoint:
    url: str
    handlers: dict[str, Callable[[Any, Any], Any]]
    invocations: list[Invocation] = field(default_factory=list)
    status: int | None = None  # answer every call with this status instead (a failing Lambda API)


@contextmanager
def lambda_endpoint(handlers: dict[str, Callable[[Any, Any], Any]]) -> Iterator[LambdaEndpoint]:
    endpoint = LambdaEndpoint(url="", handlers=handlers)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if endpoint.status is not None:
                self._answer(endpoint.status, {"Type": "Service", "message": "stand-in failure"})
                return
            name = unquote(self.path.removeprefix(PREFIX).split("/invocations")[0])
            if not self.path.startswith(PREFIX) or name not in endpoint.handlers:
                self._answer(404, {"Type": "User", "message": f"Function not found: {name}"})
                return
            kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
            call = Invocation(name, kind, json.loads(body or b"{}"))
            endpoint.invocations.append(call)
            if kind == "Event":
                threading.Thread(target=_run, args=(endpoint.handlers[name], call), daemon=True).start()
                self._answer(202, None)
            else:
                _run(endpoint.handlers[name], call)
                self._answer(200, call.result)

        def _answer(self, status: int, body: Any) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status >= 400:
                self.send_header(
                    "x-amzn-ErrorType", "ServiceException" if status >= 500 else "ResourceNotFoundException"
                )
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    endpoint.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()


def _run(handler: Callable[[Any, Any], Any], call: Invocation) -> None:
    try:
        call.result = handler(call.payload, FakeLambdaContext(remaining_ms=75_000))
    except BaseException as error:
        call.error = error
    finally:
        call.done.set()
