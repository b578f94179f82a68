"""ECS task scale-in protection, set by a worker on itself.

A busy worker must not be picked by a scale-in. It protects its own ECS task
through the container agent: ``PUT $ECS_AGENT_URI/task-protection/v1/state``
with ``{"ProtectionEnabled": true, "ExpiresInMinutes": N}`` when it goes from
idle to busy, repeats that call to renew the protection while it stays busy,
and sends ``{"ProtectionEnabled": false}`` once it has been idle for a short
while (so back-to-back tasks do not flap) and when it shuts down.

A failed call (`beatless.workers.protection.agent`) never raises: it is
logged, counted and emitted as a ``ProtectionFailures`` metric
(`beatless.workers.protection.emf`), and the controller tries again after
``retry_seconds`` or at the next transition. The ECS API is
throttled, so the agent is called only on transitions, renewals and such
retries, never on every poll.

Metrics are CloudWatch Embedded Metric Format lines on stdout: on ECS with
the awslogs driver CloudWatch Logs extracts them, so no IAM permission is
needed. This module has no Celery import; `worker/protection.py` feeds the
controller whether the worker holds any task.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from beatless.workers.protection.agent import AgentClient, AgentResult
from beatless.workers.protection.emf import EmfWriter

log = logging.getLogger("beatless.protection")


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
