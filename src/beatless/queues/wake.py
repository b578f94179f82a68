"""Waking the worker monitor when work arrives while it idles.

Deployed, `worker_monitor` runs every minute and takes SAMPLES readings on its grid when
there is work or a worker, but only IDLE_SAMPLES (1) when its first reading finds the
service idle — no task pending or reserved, no worker task running or desired: an idle
minute then costs one reading instead of a minute of Lambda time. So that the first task
after a quiet spell is not left for the next minute, the producers that send tasks (the
task API, `ingestion_queue_processor`) wake it: `MonitorWaker` invokes the monitor
function asynchronously, unless

- the monitor is sampling already: while more readings are to come it keeps
  `SAMPLING_KEY` alive (`mark_sampling`, expiring just after its next reading is due), or
- another producer woke it within `WAKE_HOLD_MS` (`WAKE_KEY`, SET NX),

decided in one Redis round trip (`claim_wake`), so a burst of launches costs one
invocation. The woken run's first reading sees the task and publishes it; the scale-out
alarm's next 10 s period sees it.

A failed wake never fails the send it follows — the task is on its queue, and the
scheduled run reads it within a minute — but it is logged as an error (`wake failed`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

MONITOR_JOB = "worker_monitor"  # the registry job woken
SAMPLING_KEY = "beatless:monitor:sampling"
WAKE_KEY = "beatless:monitor:wake"
WAKE_HOLD_MS = 10_000
INVOKE_TIMEOUT_SECONDS = 2.0
SAMPLING_MARGIN_SECONDS = 2.0  # the marker outlives the wait for the next reading by this much

# KEYS: sampling marker, wake marker; ARGV: hold (ms). 1: this caller wakes the monitor.
_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 1 end
return 0
"""

log = logging.getLogger(__name__)


def mark_sampling(client: Any, next_reading_in_seconds: float, prefix: str = "") -> None:
    """The monitor takes another reading within `next_reading_in_seconds`: nobody wakes it.
    `prefix`: the transport's `global_keyprefix` (deployments sharing a Redis stay apart)."""
    ttl_ms = int((max(next_reading_in_seconds, 0.0) + SAMPLING_MARGIN_SECONDS) * 1000)
    client.set(prefix + SAMPLING_KEY, "1", px=ttl_ms)


def claim_wake(client: Any, hold_ms: int = WAKE_HOLD_MS, prefix: str = "") -> bool:
    """True when the caller should wake the monitor: it is not sampling, and nobody woke
    it in the last `hold_ms`."""
    return bool(client.eval(_CLAIM, 2, prefix + SAMPLING_KEY, prefix + WAKE_KEY, hold_ms))


def waker_from_env(env: Mapping[str, str]) -> MonitorWaker | None:
    """The waker of `MONITOR_FUNCTION_NAME` (None when unset); its Lambda client is built on first use."""
    name = (env.get("MONITOR_FUNCTION_NAME") or "").strip()
    if not name:
        return None

    def lambda_client() -> Any:
        from beatless.aws import client

        # On a producer's request path: a slow Lambda API must not hold a launch for long.
        return client("lambda", read_timeout=INVOKE_TIMEOUT_SECONDS, attempts=1)

    return MonitorWaker(name, lambda_client)


@dataclass
class MonitorWaker:
    """Wakes `function_name` (the worker monitor) through `lambda_client()`, built on first use."""

    function_name: str
    lambda_client: Callable[[], Any]
    hold_ms: int = WAKE_HOLD_MS
    _client: Any = field(default=None, init=False, repr=False)

    def __call__(self, broker: Any, prefix: str = "") -> bool:
        """After a task was sent: wake the monitor if it idles. True when it was invoked."""
        try:
            if not claim_wake(broker, self.hold_ms, prefix):
                return False
            if self._client is None:
                self._client = self.lambda_client()
            self._client.invoke(FunctionName=self.function_name, InvocationType="Event", Payload=b"{}")
        except Exception as error:  # the task was sent; the monitor's next scheduled run finds it
            log.error("wake failed: the worker monitor was not invoked (%s: %s)", type(error).__name__, error)
            return False
        return True
