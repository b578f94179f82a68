"""WORKER_QUEUES chooses what a worker consumes (without any -Q option)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from beatless.local.servers import RedisServer
from tests.system.worker_procs import producer, running_worker, worker_env
from worker.tasks import RECORD_EFFECT

pytestmark = pytest.mark.slow


def test_worker_consumes_only_its_queues(tmp_path: Path) -> None:
    with RedisServer() as server:
        env = worker_env(server.url, WORKER_QUEUES="graph")
        app = producer(env)
        client = redis.Redis.from_url(server.url)
        for_default = app.send_task(RECORD_EFFECT, ("default-work",))
        for_graph = app.send_task(RECORD_EFFECT, ("graph-work",), queue="graph")
        with running_worker("graph-only", env, tmp_path):
            assert for_graph.get(timeout=30)["applied"] is True
        default_lists = app.settings.transport.queue_list_keys("default")
        assert sum(int(client.llen(key)) for key in default_lists) == 1  # left for a default worker
        assert for_default.state == "PENDING"
        for_default = for_graph = (
            None  # result objects unsubscribe when deleted: not after the server is gone
        )
