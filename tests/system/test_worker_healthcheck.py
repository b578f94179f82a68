"""The container health check (``python -m worker.healthcheck``) against a
real worker: healthy while idle or busy, unhealthy when the worker is
stopped, when the broker is down or when it no longer consumes a queue, and
healthy again once the worker consumes after a Redis restart."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from beatless.local.servers import RedisServer
from tests.system.worker_procs import REPO, WorkerProcess, producer, wait_for, worker_env
from worker.tasks import LONG_RUNNING, RECORD_EFFECT

pytestmark = pytest.mark.slow


def healthcheck(env: dict[str, str], node: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.healthcheck", "--node", node, "--timeout", "2"],
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

        worker.signal(signal.SIGSTOP)
        try:
            stopped = healthcheck(env, node)
        finally:
            worker.signal(signal.SIGCONT)
        assert stopped.returncode == 1
        assert stopped.stdout.startswith(f"unhealthy: no answer from {node}")
        assert busy_task.get(timeout=30)["applied"] is True
        busy_task = None  # result objects unsubscribe when deleted: not after the server is gone

        own_redis.stop()
        down = healthcheck(env, node)
        assert down.returncode == 1 and down.stdout.startswith("unhealthy: ")
        own_redis.start()  # same port, empty: as after a failover
        wait_for("the health check to pass again", lambda: healthcheck(env, node).returncode == 0, timeout=60)
        after = app.send_task(RECORD_EFFECT, ("after-restart",))
        assert after.get(timeout=30)["applied"] is True  # it really consumes again
        after = None  # result objects unsubscribe when deleted: not after the server is gone

        app.control.cancel_consumer("default", destination=[node], reply=True, timeout=5)
        not_consuming = healthcheck(env, node)
        assert not_consuming.returncode == 1
        assert "does not consume default" in not_consuming.stdout
    finally:
        worker.stop()
