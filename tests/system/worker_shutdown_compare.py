"""Why Beatless does not use Celery's own soft shutdown: a side-by-side run.

    .venv/bin/python -m tests.system.worker_shutdown_compare [runs]

Arm ``celery-soft``: ``REMAP_SIGTERM=SIGQUIT`` + ``worker_soft_shutdown_timeout=5``.
Arm ``warm+quit``: plain SIGTERM (warm shutdown), SIGQUIT 5 s later if the
worker still runs - what `worker/shutdown.py` does from inside the worker.
Same minimal app (acks_late, prefetch 1), same throwaway Redis. Scenarios:

- ``finishes-in-window``: a 3 s task gets SIGTERM after 1 s;
- ``sigterm-as-result-arrives``: SIGTERM the moment a task's result is stored.

A worker still alive 15 s after SIGTERM counts as hung and is killed. This
module is also the Celery app of the worker processes it starts. Not a test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from celery import Celery

app = Celery("compare", broker=os.environ.get("COMPARE_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    result_backend=app.conf.broker_url,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_soft_shutdown_timeout=float(os.environ.get("COMPARE_SOFT", "0")),
    broker_transport_options={"visibility_timeout": 3600},
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
)


@app.task(name="compare.slow", time_limit=60)
def slow(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


def _run(url: str, arm: str, scenario: str) -> dict[str, Any]:
    import redis

    client = redis.Redis.from_url(url)
    client.flushall()
    env = {k: v for k, v in os.environ.items() if k != "REMAP_SIGTERM"}
    env.update(COMPARE_BROKER_URL=url, PYTHONPATH=str(Path.cwd()))
    env.update(
        {"REMAP_SIGTERM": "SIGQUIT", "COMPARE_SOFT": "5"} if arm == "celery-soft" else {"COMPARE_SOFT": "0"}
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.system.worker_shutdown_compare", "worker", "-c", "1",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"cmp{time.time_ns()}@%h"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    time.sleep(2.5)
    app.conf.broker_url = app.conf.result_backend = url
    if scenario == "finishes-in-window":
        result = slow.delay(3)
        time.sleep(1)
    else:
        result = slow.delay(0.3)
        result.get(timeout=20)
    proc.send_signal(signal.SIGTERM)
    began = time.monotonic()
    quit_sent = False
    while proc.poll() is None:
        elapsed = time.monotonic() - began
        if arm == "warm+quit" and not quit_sent and elapsed > 5:
            proc.send_signal(signal.SIGQUIT)
            quit_sent = True
        if elapsed > 15:
            break
        time.sleep(0.02)
    elapsed = time.monotonic() - began
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    outcome = {
        "exit_s": elapsed,
        "hung": elapsed > 15,
        "pending": client.llen("celery"),
        "unacked": client.hlen("unacked"),
    }
    result.forget()
    return outcome


def main(runs: int) -> None:
    from beatless.local.servers import RedisServer

    with RedisServer() as server:
        for scenario in ("finishes-in-window", "sigterm-as-result-arrives"):
            for arm in ("celery-soft", "warm+quit"):
                rows = [_run(server.url, arm, scenario) for _ in range(runs)]
                exits = sorted(row["exit_s"] for row in rows)
                print(
                    f"{scenario:26} {arm:12} runs {runs}  hung {sum(r['hung'] for r in rows)}  "
                    f"left in unacked {sum(r['unacked'] > 0 for r in rows)}  "
                    f"requeued {sum(r['pending'] > 0 for r in rows)}  median exit {exits[runs // 2]:.1f} s",
                    flush=True,
                )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
