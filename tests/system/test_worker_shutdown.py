"""SIGTERM during a long task: the message goes back to Redis at once and a
second worker completes the task; nothing is lost, nothing applied twice.

The visibility timeout is two hours, so a requeue that waited for it would
time the test out: the message must come back through the soft shutdown.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import redis

from beatless.local.servers import RedisServer
from tests.system.worker_procs import WorkerProcess, producer, running_worker, wait_for, worker_env
from worker.tasks import JOURNAL_KEY, LONG_RUNNING, TOTALS_KEY

pytestmark = pytest.mark.slow


def test_sigterm_requeues_the_running_task_at_once_and_another_worker_completes_it(tmp_path: Path) -> None:
    with RedisServer() as server:
        env = worker_env(
            server.url,
            BROKER_TRANSPORT_OPTIONS=json.dumps({"visibility_timeout": 7200}),
            WORKER_STOP_TIMEOUT_SECONDS="10",
            WORKER_SOFT_SHUTDOWN_SECONDS="1",
        )
        app = producer(env)
        client = redis.Redis.from_url(server.url)
        lists = app.settings.transport.queue_list_keys("graph")

        def pending() -> int:
            return sum(int(client.llen(key)) for key in lists)

        first = WorkerProcess("first", env, tmp_path)
        try:
            first.start()
            result = app.send_task(
                LONG_RUNNING, (24, 0.25), {"subject": "shutdown", "amount": 7}, queue="graph"
            )  # 6 s
            wait_for("two steps done", lambda: result.state == "PROGRESS" and result.info["done"] >= 2)
            assert pending() == 0 and client.hlen("unacked") == 1  # held by the first worker
            # The queue-depth monitor attributes held messages to queues by routing key.
            (held,) = client.hvals("unacked")
            assert json.loads(held)[2] == "graph"

            signalled = time.monotonic()
            first.signal(signal.SIGTERM)
            wait_for("the message back in its queue", lambda: pending() == 1, timeout=20, interval=0.01)
            requeue_seconds = time.monotonic() - signalled
            first.wait(timeout=20)
        finally:
            first.stop()
        assert client.hlen("unacked") == 0
        assert result.state != "SUCCESS"  # it was interrupted, not finished
        assert "Restoring 1 unacknowledged message(s)" in first.stderr()

        with running_worker("second", env, tmp_path):
            outcome = result.get(timeout=60)

        assert outcome == {"steps": 24, "applied": True, "subject": "shutdown", "total": 7}
        assert client.lrange(JOURNAL_KEY, 0, -1) == [result.id.encode()]  # applied once
        assert client.hget(TOTALS_KEY, "shutdown") == b"7"
        result = None  # result objects unsubscribe when deleted: not after the server is gone
        print(
            f"\nrequeued {requeue_seconds:.2f} s after SIGTERM (soft shutdown 1 s, visibility_timeout 7200 s)"
        )


def test_a_task_that_finishes_inside_the_soft_window_is_acknowledged_not_requeued(tmp_path: Path) -> None:
    with RedisServer() as server:
        env = worker_env(server.url, WORKER_STOP_TIMEOUT_SECONDS="30", WORKER_SOFT_SHUTDOWN_SECONDS="20")
        app = producer(env)
        client = redis.Redis.from_url(server.url)
        lists = app.settings.transport.queue_list_keys("default")
        worker = WorkerProcess("finishing", env, tmp_path)
        try:
            worker.start()
            result = app.send_task(LONG_RUNNING, (8, 0.25), {"subject": "finishing"})  # 2 s
            wait_for("the task to start", lambda: result.state == "PROGRESS")
            worker.signal(signal.SIGTERM)
            assert worker.wait(timeout=20) == 0  # well before the 20 s soft window ends
        finally:
            worker.stop()
        assert result.state == "SUCCESS"
        assert client.hlen("unacked") == 0  # acknowledged...
        assert sum(int(client.llen(key)) for key in lists) == 0  # ...and not put back to run again
        assert client.lrange(JOURNAL_KEY, 0, -1) == [result.id.encode()]
        log = worker.stderr()
        assert "tasks still running" not in log and "Restoring" not in log
        result = None  # result objects unsubscribe when deleted: not after the server is gone
