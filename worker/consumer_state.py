"""The remote-control command `beatless_consumer`: the state of this worker's TASK consumer.

Trigger: `celery inspect`-style remote control, sent to one worker node by
`python -m worker.healthcheck`. Side effects: none (it reads attributes inside
the worker's event loop). The verdict on the report is
`beatless.workers.health.verdict`; this module only reads it out of Celery and
kombu's Redis channel (kombu 5.7: `_in_poll` is the connection a `BRPOP` is
pending on, `_brpop_sent_at` when it was sent, `qos.can_consume()` whether the
prefetch limit allows another message). A kombu without these attributes
reports None for them, which the verdict treats as unhealthy, so an upgrade
that changes them fails the health check tests instead of passing silently.
"""

from __future__ import annotations

import time
from typing import Any

from celery.worker.control import inspect_command

from beatless.workers.health import COMMAND
from worker.protection import held_task_count


@inspect_command(name=COMMAND)
def beatless_consumer(state: Any) -> dict[str, Any]:
    """What this worker's task consumer is doing (see the module docstring)."""
    consumer = state.consumer
    task_consumer = getattr(consumer, "task_consumer", None)
    channel = getattr(task_consumer, "channel", None)
    connection = getattr(consumer, "connection", None)
    sent_at = getattr(channel, "_brpop_sent_at", None)
    qos = getattr(channel, "qos", None)
    return {
        "queues": sorted(q.name for q in task_consumer.queues) if task_consumer is not None else [],
        "connected": bool(connection is not None and connection.connected),
        "brpop_in_flight": bool(getattr(channel, "_in_poll", None)),
        "brpop_age_seconds": None if sent_at is None else round(time.monotonic() - sent_at, 3),
        "brpop_timeout_seconds": getattr(channel, "brpop_timeout", None),
        "can_consume": qos.can_consume() if qos is not None else None,
        "held_tasks": held_task_count(),
    }
