"""Is a worker's task consumer consuming? The verdict of the container health check.

The worker answers the remote-control command `beatless_consumer`
(`worker/consumer_state.py`) with a report on its TASK consumer, read from
kombu's Redis channel inside the worker's event loop: the queues it consumes,
whether its broker connection is up, and the state of its `BRPOP` polling. An
answer alone proves only that the main loop runs and the remote-control
(pub/sub) connection works — a different connection from the one tasks
arrive on. `verdict` turns the report into healthy/unhealthy:

- every expected queue is consumed, and the task consumer's connection is up;
- a worker whose prefetch is used up (it holds as many tasks as it may) is not
  polling, by design: healthy (busy);
- otherwise its last `BRPOP` was sent at most `brpop_timeout` + `stall_seconds`
  ago: Redis answers a `BRPOP` within its timeout (1 s), and the loop sends the
  next one at once, so an older one is a reply that never came (a half-open
  connection after a failover) or a loop that stopped polling.

Pure: no Celery import; the report is a JSON object.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

COMMAND = "beatless_consumer"  # the remote-control command's name
DEFAULT_STALL_SECONDS = 10.0


def verdict(
    report: Mapping[str, Any], expected_queues: Iterable[str], *, stall_seconds: float = DEFAULT_STALL_SECONDS
) -> tuple[bool, str]:
    """(healthy, reason) for one worker's `beatless_consumer` report."""
    consumed = set(report.get("queues") or [])
    missing = sorted(set(expected_queues) - consumed)
    if missing:
        return False, f"does not consume {', '.join(missing)} (consumes {sorted(consumed)})"
    if not report.get("connected"):
        return False, "its task consumer has no broker connection"
    if report.get("can_consume") is False:
        return True, f"busy: holds {report.get('held_tasks', '?')} task(s), polls again when one ends"
    age = report.get("brpop_age_seconds")
    limit = float(report.get("brpop_timeout_seconds") or 1) + stall_seconds
    if age is None:
        return False, "has not polled its queues since it (re)connected"
    if age > limit:
        if report.get("brpop_in_flight"):
            return False, f"its BRPOP got no reply for {age:.0f} s (Redis answers within its timeout)"
        return False, f"has not polled its queues for {age:.0f} s"
    return True, f"consumes {', '.join(sorted(consumed))}"
