"""The local scaler never stops a worker that holds a task: 20 scale-in cycles with tasks
running on some workers, real Celery worker processes and Redis — every stopped worker was
idle when it was stopped, the busy ones went on, and every task was applied exactly once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from beatless.local.runner import EFFECTS_APPLIED_KEY, EFFECTS_TOTALS_KEY, LocalWorkers
from beatless.workers import presence
from tests.system.worker_procs import REPO, producer, wait_for, worker_env
from worker.tasks import LONG_RUNNING

pytestmark = pytest.mark.slow
CYCLES = 20


def test_twenty_scale_ins_with_tasks_running_stop_only_idle_workers(redis_url: str, tmp_path: Path) -> None:
    env = worker_env(redis_url, WORKER_QUEUES="default", WORKER_PRESENCE_SECONDS="0.2",
                     WORKER_CONCURRENCY="1")  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    lines = {"seen": []}  # every presence reading the scaler acted on

    def read() -> list[presence.WorkerPresence]:
        found = presence.read(client)
        lines["seen"].append({w.name: w.state for w in found})
        return found

    workers = LocalWorkers(env, REPO, tmp_path, presence=read, log_level="INFO")
    app = producer(env)
    sent = 0
    try:
        for cycle in range(CYCLES):
            workers.scale_to(3)
            wait_for(
                "three workers to say they are there", lambda: len(presence.read(client)) >= 3, timeout=60
            )
            busy_wanted = 1 + cycle % 2
            for _ in range(busy_wanted):
                app.send_task(LONG_RUNNING, kwargs={"steps": 3, "step_seconds": 0.5, "subject": "cycles"},
                              queue="default")  # fmt: skip
                sent += 1
            wait_for(
                "the tasks to be taken",
                lambda n=busy_wanted: sum(w.state == "busy" for w in presence.read(client)) >= n,
                timeout=60,
            )
            busy = {w.name for w in presence.read(client) if w.state == "busy"}
            stopped_before = len(workers.stopped)
            workers.scale_to(0)
            stopped = set(workers.stopped[stopped_before:])
            assert stopped and not stopped & busy, (cycle, stopped, busy)
            try:
                wait_for(
                    "the busy workers to finish",
                    lambda n=sent: int(client.hlen(EFFECTS_APPLIED_KEY)) >= n,
                    timeout=60,
                )
            except AssertionError:
                running = [workers.names[p.pid] for p in workers.running]
                applied = int(client.hlen(EFFECTS_APPLIED_KEY))
                seen = lines["seen"][-3:]
                state = (cycle, sent, applied, busy, stopped, running, presence.read(client), seen)
                raise AssertionError(state) from None
            time.sleep(0.5)  # their next presence line says idle
    finally:
        workers.stop_all()
    assert workers.kept_busy > 0  # the scaler did meet busy workers, and kept them
    assert int(client.hlen(EFFECTS_APPLIED_KEY)) == sent  # every task applied once
    assert int(client.hget(EFFECTS_TOTALS_KEY, "cycles") or 0) == sent
