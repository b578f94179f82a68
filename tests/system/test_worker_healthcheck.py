"""The container health check (``python -m worker.healthcheck``) against a
real worker, and producers waiting for results across Redis restarts.

- healthy while idle or busy; unhealthy when the worker is stopped, when the
  broker is down, when it no longer consumes a queue, and when its task
  consumer's polling stalled while its remote control still answers (a
  half-open BRPOP connection, made by a proxy in front of the real Redis);
  healthy again once the worker consumes after a Redis restart;
- a producer that waits for a task across a Redis restart (empty, as after a
  failover) gets its result: Beatless reads the stored state
  (`beatless.workers.results.wait_for_result`), not the result pub/sub that a
  reconnecting consumer can miss (celery#4857).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from beatless.local.servers import RedisServer
from beatless.queues.transport import TransportOptions
from beatless.workers.results import wait_for_result
from tests.support.redis_proxy import FreezingRedisProxy
from tests.system.worker_procs import REPO, WorkerProcess, producer, wait_for, worker_env
from worker.tasks import LONG_RUNNING, RECORD_EFFECT

pytestmark = pytest.mark.slow

# Rounds of "restart Redis, wait for a task" per run; the note's 20-of-20 figure sets 20.
RESTART_ROUNDS = int(os.environ.get("BEATLESS_RESTART_ROUNDS", "3"))


def healthcheck(env: dict[str, str], node: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.healthcheck", "--node", node, "--timeout", "2", *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_healthcheck_follows_the_worker(own_redis: RedisServer, tmp_path: Path) -> None:
    env = worker_env(own_redis.url)
    worker = WorkerProcess("health", env, tmp_path)
    try:
        worker.start()
        node = worker.nodename
        app = producer(env)

        idle = healthcheck(env, node)
        assert idle.returncode == 0, idle.stdout + idle.stderr
        assert idle.stdout.startswith("healthy: ") and "default" in idle.stdout

        busy_task = app.send_task(LONG_RUNNING, (12, 0.25))
        wait_for("the task to run", lambda: busy_task.state == "PROGRESS")
        busy = healthcheck(env, node)  # the only pool process is busy; the main process answers
        assert busy.returncode == 0, busy.stdout
        assert "busy" in busy.stdout  # its prefetch is used up: not polling, by design

        worker.signal(signal.SIGSTOP)
        try:
            stopped = healthcheck(env, node)
        finally:
            worker.signal(signal.SIGCONT)
        assert stopped.returncode == 1
        assert stopped.stdout.startswith(f"unhealthy: no answer from {node}")
        assert wait_for_result(app.backend, busy_task.id, timeout=30)["applied"] is True

        own_redis.stop()
        down = healthcheck(env, node)
        assert down.returncode == 1 and down.stdout.startswith("unhealthy: ")
        own_redis.start()  # same port, empty: as after a failover
        wait_for("the health check to pass again", lambda: healthcheck(env, node).returncode == 0, timeout=60)
        after = app.send_task(RECORD_EFFECT, ("after-restart",))
        assert wait_for_result(app.backend, after.id, timeout=30)["applied"] is True  # it consumes again

        app.control.cancel_consumer("default", destination=[node], reply=True, timeout=5)
        not_consuming = healthcheck(env, node)
        assert not_consuming.returncode == 1
        assert "does not consume default" in not_consuming.stdout
    finally:
        worker.stop()


def test_a_worker_whose_task_polling_stalled_is_unhealthy_while_its_remote_control_answers(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    with FreezingRedisProxy(own_redis.port) as proxy:
        # kombu drops a BRPOP connection whose reply is overdue by health_check_interval
        # (25 s by default; 8 s here, so the worker also recovers within the test once the
        # proxy lets it). The check, allowing 1 s beyond the 1 s BRPOP timeout, sees the
        # stall first.
        env = worker_env(proxy.url, BROKER_TRANSPORT_OPTIONS=json.dumps({"health_check_interval": 8}))
        worker = WorkerProcess("stall", env, tmp_path)
        try:
            worker.start()
            node = worker.nodename
            app = producer(env)
            assert healthcheck(env, node).returncode == 0

            proxy.freeze_brpop("default")  # the task consumer's next BRPOP is never answered
            wait_for("the BRPOP to be frozen", lambda: proxy.frozen_connections >= 1, timeout=10)
            stalled = wait_for(
                "the check to see the stall",
                lambda: (check := healthcheck(env, node, "--stall-seconds", "1")).returncode == 1 and check,
                timeout=15,
            )
            # The worker answered (remote control works); what it said is that tasks do not arrive.
            assert "no answer" not in stalled.stdout and "BRPOP got no reply" in stalled.stdout
            task = app.send_task(RECORD_EFFECT, ("while-stalled",))
            time.sleep(1)
            lists = TransportOptions().queue_list_keys("default")  # one list per priority level
            client = redis.Redis.from_url(own_redis.url)
            assert sum(client.llen(key) for key in lists) == 1  # waiting, not consumed

            proxy.thaw()  # kombu reconnects the stale BRPOP connection by itself
            wait_for(
                "the check to pass again",
                lambda: healthcheck(env, node, "--stall-seconds", "1").returncode == 0,
                timeout=30,
            )
            assert wait_for_result(app.backend, task.id, timeout=30)["applied"] is True
        finally:
            worker.stop()


def test_a_producer_waiting_across_redis_restarts_gets_every_result(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    env = worker_env(own_redis.url)
    worker = WorkerProcess("restarts", env, tmp_path)
    try:
        worker.start()
        app = producer(env)
        # Sending subscribes the producer's result consumer (pub/sub), as a long-lived producer's is.
        first = app.send_task(RECORD_EFFECT, ("before",))
        assert wait_for_result(app.backend, first.id, timeout=30)["applied"] is True
        for round_ in range(RESTART_ROUNDS):
            own_redis.restart()  # empty, as after a failover
            task = app.send_task(RECORD_EFFECT, (f"round-{round_}",))  # while the worker reconnects
            result = wait_for_result(app.backend, task.id, timeout=60)
            assert result["applied"] is True and result["subject"] == f"round-{round_}", round_
    finally:
        worker.stop()
