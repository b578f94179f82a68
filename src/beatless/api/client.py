"""A client of the task API for the CLI (`beatless tasks ...`): the local server with its
bearer token (`BEATLESS_API_URL`, `BEATLESS_API_TOKEN`). Standard library only.

Every answer is (status, JSON body); `ApiError` carries a 4xx/5xx answer's error (its
field and message), so the CLI prints what the API said and exits 1.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from beatless.errors import BeatlessError

EVENT_STREAM_TIMEOUT_SECONDS = 60.0  # the server sends a comment every 15 s while a task is quiet


class ApiError(BeatlessError):
    def __init__(self, status: int, field: str | None, message: str) -> None:
        super().__init__(f"HTTP {status}" + (f" ({field})" if field else "") + f": {message}")
        self.status, self.field, self.message = status, field, message


@dataclass(frozen=True)
class TaskApiClient:
    url: str
    token: str
    timeout: float = 30.0

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            self.url.rstrip("/") + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as error:
            raise _api_error(error) from None

    def events(self, task_id: str, last_event_id: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event name, data) as the server sends them, until it ends the stream."""
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        request = urllib.request.Request(f"{self.url.rstrip('/')}/tasks/{task_id}/events", headers=headers)
        try:
            answer = urllib.request.urlopen(request, timeout=EVENT_STREAM_TIMEOUT_SECONDS)
        except urllib.error.HTTPError as error:
            raise _api_error(error) from None
        with answer:
            name, data = "message", ""
            for raw in answer:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event: "):
                    name = line[len("event: ") :]
                elif line.startswith("data: "):
                    data += line[len("data: ") :]
                elif not line and data:
                    yield name, json.loads(data)
                    name, data = "message", ""


def _api_error(error: urllib.error.HTTPError) -> ApiError:
    try:
        detail = json.loads(error.read() or b"{}").get("error") or {}
    except ValueError:
        detail = {}
    return ApiError(error.code, detail.get("field"), detail.get("message") or error.reason)
