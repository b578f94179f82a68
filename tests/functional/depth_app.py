"""A tiny Celery app of the queue-depth tests: real producers, a real worker.

It is configured like the Beatless worker where depth is concerned
(acks_late, prefetch 1, JSON) but does not depend on `worker/`. The broker
URL and transport options come from the environment for the worker process
(``celery -A depth_app worker``); tests build producers with `make_app`.

`depth.slow` records its start in Redis (``depth-started:<routing key>``)
before it sleeps, so a test knows exactly which queues' messages a worker
holds without looking at the unacked hash it is testing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

import redis
from celery import Celery

STARTED_PREFIX = "depth-started:"
SLOW_TASK = "depth.slow"


def slow(task: Any, seconds: float) -> None:
    routing_key = task.request.delivery_info["routing_key"]
    marker = redis.Redis.from_url(task.app.conf.broker_url)
    marker.incr(STARTED_PREFIX + routing_key)
    marker.close()
    time.sleep(seconds)


def make_app(broker_url: str, transport_options: Mapping[str, Any]) -> Celery:
    app = Celery("depth_app", broker=broker_url, set_as_current=False)
    app.conf.update(
        broker_transport_options=dict(transport_options),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )

    app.task(name=SLOW_TASK, bind=True)(slow)
    return app


def send(app: Celery, queue: str, priorities: Iterable[int], seconds: float = 0) -> int:
    """Enqueue one `depth.slow` per priority on `queue`, as any producer would."""
    task = app.tasks[SLOW_TASK]
    sent = 0
    with app.producer_or_acquire() as producer:
        for priority in priorities:
            task.apply_async(args=[seconds], queue=queue, priority=priority, producer=producer)
            sent += 1
    return sent


app = make_app(
    os.environ.get("DEPTH_BROKER_URL", "redis://127.0.0.1:6379/0"),
    json.loads(os.environ.get("DEPTH_TRANSPORT_OPTIONS", "{}")),
)
