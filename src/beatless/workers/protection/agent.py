"""The ECS container agent's task protection endpoint, spoken over HTTP.

``PUT $ECS_AGENT_URI/task-protection/v1/state`` with ``{"ProtectionEnabled":
true, "ExpiresInMinutes": N}`` (or ``false``). The agent answers
(amazon-ecs-agent ``tmds/handlers/taskprotection/v1``):

- 200 ``{"protection": {"ProtectionEnabled": ..., "ExpirationDate": ..., "TaskArn": ...}}``
- 200 ``{"failure": {"Arn": ..., "Reason": "DEPLOYMENT_BLOCKED", "Detail": ...}}``
- 4xx/5xx ``{"requestID": ..., "error": {"Arn": ..., "Code": "AccessDeniedException", "Message": ...}}``
  (403 without task role credentials, 504 ``RequestCanceled`` when ECS timed out).

Every call has short timeouts and a bounded number of attempts; only answers
that may change on a second try (timeouts, refused connections, 5xx,
throttling) are retried. A call never raises: it returns an `AgentResult`.
`task_id_from_metadata` reads this task's id from the task metadata endpoint.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("beatless.protection")

STATE_PATH = "/task-protection/v1/state"

# Reasons that a second attempt may cure. Everything else (DEPLOYMENT_BLOCKED,
# TASK_NOT_VALID, AccessDeniedException, ...) is an answer, not an accident.
RETRYABLE_CODES = frozenset({"ThrottlingException", "RequestCanceled", "ServerException", "RequestError"})


@dataclass(frozen=True)
class AgentResult:
    """The outcome of one protection call (after retries)."""

    ok: bool
    protection_enabled: bool | None = None
    expiration: str | None = None
    reason: str | None = None  # metric dimension: failure Reason, error Code, Timeout, HTTP500...
    message: str = ""
    # The request may have reached the agent although no answer came back.
    uncertain: bool = False
    attempts: int = 1


class AgentClient:
    """Speaks the task protection endpoint of the ECS container agent."""

    def __init__(
        self,
        agent_uri: str,
        *,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        attempts: int = 2,
        retry_delay: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(agent_uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"agent URI must be an http URL, got {agent_uri!r}")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/") + STATE_PATH
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.attempts = max(1, attempts)
        self.retry_delay = retry_delay
        self._sleep = sleep

    @property
    def worst_case_seconds(self) -> float:
        """How long one call can take at most."""
        per_attempt = self.connect_timeout + 2 * self.read_timeout  # send, then read
        return self.attempts * per_attempt + (self.attempts - 1) * self.retry_delay

    def protect(self, expires_in_minutes: int) -> AgentResult:
        return self._call({"ProtectionEnabled": True, "ExpiresInMinutes": expires_in_minutes})

    def release(self) -> AgentResult:
        return self._call({"ProtectionEnabled": False})

    def _call(self, body: dict[str, Any]) -> AgentResult:
        result = AgentResult(ok=False, reason="NotCalled")
        for attempt in range(1, self.attempts + 1):
            result, retryable = self._attempt(body)
            result = _with_attempts(result, attempt)
            if result.ok or not retryable or attempt == self.attempts:
                return result
            self._sleep(self.retry_delay)
        return result

    def _attempt(self, body: dict[str, Any]) -> tuple[AgentResult, bool]:
        payload = json.dumps(body).encode()
        conn_cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(self._host, self._port, timeout=self.connect_timeout)
        sent = False
        try:
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(self.read_timeout)
            conn.request("PUT", self._path, body=payload, headers={"Content-Type": "application/json"})
            sent = True
            response = conn.getresponse()
            status = response.status
            raw = response.read()
        except TimeoutError:
            return AgentResult(ok=False, reason="Timeout", message="no answer in time", uncertain=sent), True
        except ConnectionRefusedError as exc:
            return AgentResult(ok=False, reason="ConnectionRefused", message=str(exc)), True
        except (OSError, http.client.HTTPException) as exc:
            return (
                AgentResult(ok=False, reason="ConnectionError", message=repr(exc), uncertain=sent),
                True,
            )
        finally:
            conn.close()
        return _parse_answer(status, raw)


def _with_attempts(result: AgentResult, attempts: int) -> AgentResult:
    return AgentResult(
        ok=result.ok,
        protection_enabled=result.protection_enabled,
        expiration=result.expiration,
        reason=result.reason,
        message=result.message,
        uncertain=result.uncertain,
        attempts=attempts,
    )


def _parse_answer(status: int, raw: bytes) -> tuple[AgentResult, bool]:
    try:
        answer = json.loads(raw) if raw else {}
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        reason = f"HTTP{status}" if status != 200 else "BadResponse"
        text = raw[:200].decode(errors="replace")
        return AgentResult(ok=False, reason=reason, message=text), status >= 500
    if status == 200 and isinstance(answer.get("protection"), dict):
        protection = answer["protection"]
        return (
            AgentResult(
                ok=True,
                protection_enabled=bool(protection.get("ProtectionEnabled")),
                expiration=protection.get("ExpirationDate"),
            ),
            False,
        )
    if isinstance(answer.get("failure"), dict):
        failure = answer["failure"]
        reason = str(failure.get("Reason") or "UnknownFailure")
        detail = failure.get("Detail")
        return AgentResult(ok=False, reason=reason, message=str(detail or "")), False
    if isinstance(answer.get("error"), dict):
        error = answer["error"]
        code = str(error.get("Code") or f"HTTP{status}")
        return (
            AgentResult(ok=False, reason=code, message=str(error.get("Message") or "")),
            status >= 500 or code in RETRYABLE_CODES,
        )
    reason = f"HTTP{status}" if status != 200 else "BadResponse"
    return AgentResult(ok=False, reason=reason, message=json.dumps(answer)[:200]), status >= 500


def task_id_from_metadata(metadata_uri: str | None, fallback: str, timeout: float = 2.0) -> str:
    """The ECS task id (last part of the task ARN) from the task metadata endpoint v4.

    Falls back to `fallback` (the hostname) outside ECS or when the endpoint
    does not answer; the reason is logged.
    """
    if not metadata_uri:
        return fallback
    parts = urlsplit(metadata_uri.rstrip("/") + "/task")
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise ValueError(f"HTTP {response.status}")
        arn = json.loads(body)["TaskARN"]
        task_id = str(arn).rsplit("/", 1)[-1]
        if not task_id:
            raise ValueError(f"unexpected TaskARN {arn!r}")
        return task_id
    except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException) as exc:
        log.warning("task id not available from %s (%s); using %s", metadata_uri, exc, fallback)
        return fallback
    finally:
        conn.close()
