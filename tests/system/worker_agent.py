"""A stand-in for the ECS container agent's task protection endpoint.

It speaks the agent's protocol (amazon-ecs-agent
``ecs-agent/tmds/handlers/taskprotection/v1``): ``PUT
/api/<container>/task-protection/v1/state`` with ``{"ProtectionEnabled":
bool, "ExpiresInMinutes": n}`` answers ``{"protection": {...}}``, a 200
``{"failure": {...}}`` (e.g. DEPLOYMENT_BLOCKED) or an ``{"error": {...}}``
with a 4xx/5xx status. It also serves the task metadata endpoint v4
(``GET /v4/<container>/task``) so the worker learns its task id. Every
request is recorded; `mode` chooses the next answers.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from beatless.local.servers import free_port

CONTAINER = "3f2a5c0e9d1b-4711"
TASK_ID = "0123456789abcdef0123456789abcdef"
TASK_ARN = f"arn:aws:ecs:us-east-1:111122223333:task/beatless-workers/{TASK_ID}"

Mode = Literal["ok", "blocked", "denied", "error500", "hang", "garbage"]


@dataclass
class AgentCall:
    at: float  # time.monotonic() when the request arrived
    body: dict[str, Any]
    answered: str  # the mode that answered it

    @property
    def enabled(self) -> bool:
        return bool(self.body.get("ProtectionEnabled"))


@dataclass
class FakeAgent:
    mode: Mode = "ok"
    hang_seconds: float = 3.0
    calls: list[AgentCall] = field(default_factory=list)
    protected_until: datetime | None = None
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == f"/v4/{CONTAINER}/task":
                    self._send(200, {"Cluster": "beatless-workers", "TaskARN": TASK_ARN})
                elif self.path == f"/api/{CONTAINER}/task-protection/v1/state":
                    self._send(200, {"protection": agent._protection()})
                else:
                    self._send(404, {"error": {"Code": "ResourceNotFoundException", "Message": self.path}})

            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path != f"/api/{CONTAINER}/task-protection/v1/state":
                    self._send(404, {"error": {"Code": "ResourceNotFoundException", "Message": self.path}})
                    return
                try:
                    body = json.loads(raw)
                    enabled = body["ProtectionEnabled"]
                except (ValueError, KeyError):
                    self._send(
                        400, {"error": {"Code": "InvalidParameterException", "Message": "bad request"}}
                    )
                    return
                mode = agent.mode
                with agent._lock:
                    agent.calls.append(AgentCall(time.monotonic(), body, mode))
                if mode == "hang":
                    time.sleep(agent.hang_seconds)
                    mode = "ok"
                if mode == "ok":
                    minutes = int(body.get("ExpiresInMinutes") or 120)
                    with agent._lock:
                        now = datetime.now(UTC)
                        agent.protected_until = now + timedelta(minutes=minutes) if enabled else None
                    self._send(200, {"protection": agent._protection()})
                elif mode == "blocked":
                    self._send(
                        200, {"failure": {"Arn": TASK_ARN, "Detail": None, "Reason": "DEPLOYMENT_BLOCKED"}}
                    )
                elif mode == "denied":
                    message = (
                        "User: arn:aws:sts::111122223333:assumed-role/worker-task-role/x is not authorized "
                        f"to perform: ecs:UpdateTaskProtection on resource: {TASK_ARN}"
                    )
                    self._send(
                        400,
                        {
                            "requestID": "12345-abc-6789",
                            "error": {"Arn": TASK_ARN, "Code": "AccessDeniedException", "Message": message},
                        },
                    )
                elif mode == "error500":
                    self._send(
                        500,
                        {
                            "error": {
                                "Arn": TASK_ARN,
                                "Code": "ServerException",
                                "Message": "Unexpected error",
                            }
                        },
                    )
                else:  # garbage
                    self.send_response(502)
                    self.end_headers()
                    self.wfile.write(b"<html>bad gateway</html>")

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                # The client may have given up waiting (a hang answer): that is its right.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _protection(self) -> dict[str, Any]:
        with self._lock:
            until = self.protected_until
        if until is not None and until <= datetime.now(UTC):
            until = None
        return {
            "ExpirationDate": until.strftime("%Y-%m-%dT%H:%M:%SZ") if until else None,
            "ProtectionEnabled": until is not None,
            "TaskArn": TASK_ARN,
        }

    @property
    def agent_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/{CONTAINER}"

    @property
    def metadata_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/v4/{CONTAINER}"

    @property
    def protected(self) -> bool:
        return bool(self._protection()["ProtectionEnabled"])

    def snapshot(self) -> list[AgentCall]:
        with self._lock:
            return list(self.calls)

    def start(self) -> FakeAgent:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> FakeAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
