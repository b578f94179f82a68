"""The product's priority order holds with a real worker.

Tasks of every level (1-10, plus one sent without a priority) are enqueued,
shuffled and spread over the three queues, while no worker runs; then one
worker with concurrency 1 drains them. The journal of applied effects must
list them most urgent first.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import redis
from celery import Celery
from kombu import Queue

from beatless.local.servers import RedisServer
from beatless.queues.priorities import NORMAL, celery_priority
from beatless.workers.settings import PRODUCT_QUEUES
from tests.system.worker_procs import producer, running_worker, wait_for, worker_env
from worker.tasks import JOURNAL_KEY, RECORD_EFFECT

pytestmark = pytest.mark.slow


def test_one_worker_serves_levels_most_urgent_first(tmp_path: Path) -> None:
    with RedisServer() as server:
        env = worker_env(server.url, WORKER_CONCURRENCY="1")
        app = producer(env)
        transport = app.settings.transport
        client = redis.Redis.from_url(server.url)

        levels = list(range(1, 11))
        random.Random(20261123).shuffle(levels)
        level_of: dict[str, int] = {}
        for level in levels:
            queue = PRODUCT_QUEUES[level % 3]
            result = app.send_task(
                RECORD_EFFECT, (f"level-{level}",), queue=queue, priority=celery_priority(level)
            )
            level_of[result.id] = level
            # Each level has a list of its own (Beatless' default priority steps).
            assert client.llen(transport.queue_list_key(queue, celery_priority(level))) == 1
        unnamed = app.send_task(RECORD_EFFECT, ("no-priority",))  # the producer names no priority
        level_of[unnamed.id] = NORMAL
        assert client.llen(transport.queue_list_key("default", celery_priority(NORMAL))) == 2

        # Result objects unsubscribe when deleted: drop them while the server runs.
        result = unnamed = None
        with running_worker("order", env, tmp_path):
            wait_for("all 11 tasks to run", lambda: client.llen(JOURNAL_KEY) == 11)
        journal = [str(task_id, "ascii") for task_id in client.lrange(JOURNAL_KEY, 0, -1)]  # type: ignore[arg-type]

        order = [level_of[task_id] for task_id in journal]
        assert order == [10, 9, 8, 7, 6, 5, 5, 4, 3, 2, 1], order


def test_without_the_worker_app_routing_kombu_files_an_unprioritised_message_as_most_urgent() -> None:
    """Why the worker app routes every message to the normal level: a plain
    Celery producer that names no priority lands in kombu's priority-0 list."""
    with RedisServer() as server:
        env = worker_env(server.url)
        options = producer(env).settings.kombu_transport_options()
        plain = Celery("plain", broker=server.url, set_as_current=False)
        plain.conf.update(
            broker_transport_options=options,
            task_queues=[Queue("probe", routing_key="probe")],
            task_default_queue="probe",
            task_serializer="json",
        )
        plain.send_task(RECORD_EFFECT, ("plain",))
        client = redis.Redis.from_url(server.url)
        keys = {
            key.decode(): client.llen(key)
            for key in client.scan_iter("probe*")
            if client.type(key) == b"list"
        }
        assert keys == {"probe": 1}, json.dumps(keys)  # the priority-0 list, served before everything
