"""ECS task scale-in protection, set by a worker on itself.

A busy worker must not be picked by a scale-in. It protects its own ECS task
through the container agent: ``PUT $ECS_AGENT_URI/task-protection/v1/state``
with ``{"ProtectionEnabled": true, "ExpiresInMinutes": N}`` when it goes from
idle to busy, repeats that call to renew the protection while it stays busy,
and sends ``{"ProtectionEnabled": false}`` once it has been idle for a short
while (so back-to-back tasks do not flap) and when it shuts down.

The agent answers (amazon-ecs-agent ``tmds/handlers/taskprotection/v1``):

- 200 ``{"protection": {"ProtectionEnabled": ..., "ExpirationDate": ..., "TaskArn": ...}}``
- 200 ``{"failure": {"Arn": ..., "Reason": "DEPLOYMENT_BLOCKED", "Detail": ...}}``
- 4xx/5xx ``{"requestID": ..., "error": {"Arn": ..., "Code": "AccessDeniedException", "Message": ...}}``
  (403 without task role credentials, 504 ``RequestCanceled`` when ECS timed out).

Every call has short timeouts and a bounded number of attempts; only
answers that may change on a second try (timeouts, refused connections, 5xx,
throttling) are retried. A failed call never raises: it is logged, counted
and emitted as a ``ProtectionFailures`` metric, and the controller tries
again after ``retry_seconds`` or at the next transition. The ECS API is
throttled, so the agent is called only on transitions, renewals and such
retries, never on every poll.

Metrics are CloudWatch Embedded Metric Format lines on stdout: on ECS with
the awslogs driver CloudWatch Logs extracts them, so no IAM permission is
needed. This module has no Celery import; `worker/protection.py` feeds the
controller whether the worker holds any task.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit

from beatless import metrics

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


class EmfWriter:
    """Writes CloudWatch Embedded Metric Format lines (one JSON object per line)."""

    def __init__(
        self,
        namespace: str,
        stream: TextIO,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.namespace = namespace
        self._stream = stream
        self._clock = clock
        self._lock = threading.Lock()

    def emit(self, name: str, value: float, dimensions: dict[str, str], **properties: Any) -> None:
        record: dict[str, Any] = {
            "_aws": {
                "Timestamp": int(self._clock() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": self.namespace,
                        "Dimensions": [sorted(dimensions)],
                        "Metrics": [
                            {
                                "Name": name,
                                "Unit": "Count",
                                "StorageResolution": metrics.STORAGE_RESOLUTION_SECONDS,
                            }
                        ],
                    }
                ],
            },
            **properties,
            **dimensions,
            name: value,
        }
        line = json.dumps(record, separators=(",", ":"), sort_keys=True)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def task_protected(self, task_id: str, protected: bool) -> None:
        self.emit(metrics.TASK_PROTECTED, 1 if protected else 0, {metrics.TASK_ID_DIMENSION: task_id})

    def protection_failure(self, reason: str, task_id: str, action: str, message: str) -> None:
        self.emit(
            metrics.PROTECTION_FAILURES,
            1,
            {metrics.REASON_DIMENSION: reason},
            TaskId=task_id,
            Action=action,
            Message=message[:300],
        )


@dataclass(frozen=True)
class ProtectionPolicy:
    expires_minutes: int
    renew_seconds: float
    release_delay_seconds: float
    retry_seconds: float
    metrics_interval_seconds: float = 60.0


State = Literal["unprotected", "protected", "unknown"]


class ProtectionController:
    """Decides when to protect, renew and release; one instance per worker.

    `observe(busy)` is called every poll with whether the worker holds any
    task; it calls the agent only on a transition, a due renewal or a due
    retry. `clock` is monotonic seconds (injected in tests).
    """

    def __init__(
        self,
        client: AgentClient,
        policy: ProtectionPolicy,
        emf: EmfWriter,
        task_id: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.policy = policy
        self.emf = emf
        self.task_id = task_id
        self._clock = clock
        self._lock = threading.RLock()
        self.state: State = "unprotected"
        self._protected_at: float | None = None
        self._expires_at: float | None = None
        self._idle_since: float | None = None
        self._next_attempt_at = float("-inf")
        self._last_metric_at: float | None = None
        self.calls: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()

    @property
    def protected(self) -> bool:
        return self.state == "protected"

    def observe(self, busy: bool) -> None:
        with self._lock:
            now = self._clock()
            if self.state == "protected" and self._expires_at is not None and now >= self._expires_at:
                log.warning("task protection expired before it was renewed")
                self.state = "unprotected"
            acted = self._step(busy, now)
            due = (
                self._last_metric_at is None
                or now - self._last_metric_at >= self.policy.metrics_interval_seconds
            )
            if not acted and due:
                self._emit_state(now)

    def _step(self, busy: bool, now: float) -> bool:
        """Make at most one agent call; True if one was made."""
        if busy:
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = now
        if now < self._next_attempt_at:  # a failed call waits for its retry delay
            return False
        idle_long_enough = (
            self._idle_since is not None and now - self._idle_since >= self.policy.release_delay_seconds
        )
        renewal_due = (
            self.state == "protected"
            and self._protected_at is not None
            and now - self._protected_at >= self.policy.renew_seconds
        )
        if busy and self.state != "protected":
            self._protect(now, "protect")
        elif idle_long_enough and self.state != "unprotected":
            self._release(now, "release")
        elif renewal_due and not idle_long_enough:
            # Busy, or idle but still inside the release delay.
            self._protect(now, "renew")
        else:
            return False
        return True

    def shutdown(self) -> None:
        """Release the protection (if it may be set) before the worker exits."""
        with self._lock:
            now = self._clock()
            if self.state != "unprotected":
                self._release(now, "shutdown")
            else:
                self._emit_state(now)

    def _protect(self, now: float, action: str) -> None:
        self.calls[action] += 1
        result = self.client.protect(self.policy.expires_minutes)
        if result.ok and result.protection_enabled:
            self.state = "protected"
            self._protected_at = now
            self._expires_at = now + self.policy.expires_minutes * 60
            self._next_attempt_at = float("-inf")
            log.info(
                "task protection %s: protected for %d min (until %s)",
                "renewed" if action == "renew" else "on",
                self.policy.expires_minutes,
                result.expiration,
            )
        else:
            if result.uncertain and self.state == "unprotected":
                self.state = "unknown"
            self._failed(now, action, result)
        self._emit_state(now)

    def _release(self, now: float, action: str) -> None:
        self.calls[action] += 1
        result = self.client.release()
        if result.ok and not result.protection_enabled:
            self.state = "unprotected"
            self._protected_at = self._expires_at = None
            self._next_attempt_at = float("-inf")
            log.info("task protection released (%s)", "worker stopping" if action == "shutdown" else "idle")
        else:
            if result.uncertain:
                self.state = "unknown"
            self._failed(now, action, result)
        self._emit_state(now)

    def _failed(self, now: float, action: str, result: AgentResult) -> None:
        reason = result.reason or ("Unexpected" if result.ok else "Unknown")
        if result.ok:
            # The agent answered but the state is not what we asked for.
            reason = "UnexpectedState"
        self.failures[reason] += 1
        self._next_attempt_at = now + self.policy.retry_seconds
        log.warning(
            "task protection %s failed after %d attempt(s): %s %s; the worker carries on, next try in %g s",
            action,
            result.attempts,
            reason,
            result.message,
            self.policy.retry_seconds,
        )
        self.emf.protection_failure(reason, self.task_id, action, result.message)

    def _emit_state(self, now: float) -> None:
        self._last_metric_at = now
        self.emf.task_protected(self.task_id, self.state == "protected")


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
