"""An unsafe worker refuses to start, started the normal way
(``celery -A worker.app worker``), says why, and takes no message."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from beatless.local.servers import RedisServer
from tests.system.worker_procs import REPO, producer, worker_env
from worker.app import task_time_limits
from worker.tasks import RECORD_EFFECT

# The task the check must name: the longest time limit (ties: the last name), as registered.
LONGEST = max(
    task_time_limits(producer(worker_env("redis://127.0.0.1:1/0"))).items(),
    key=lambda item: (item[1] or 0, item[0]),
)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    with RedisServer() as server:
        yield server.url


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"BROKER_TRANSPORT_OPTIONS": json.dumps({"visibility_timeout": 60})},
            [
                "BROKER_TRANSPORT_OPTIONS.visibility_timeout (60 s) must be longer",
                f"task {LONGEST[0]} may run {LONGEST[1]:g} s",
            ],
        ),
        (
            {"WORKER_STOP_TIMEOUT_SECONDS": "30", "WORKER_SOFT_SHUTDOWN_SECONDS": "28"},
            ["WORKER_SOFT_SHUTDOWN_SECONDS (28 s) must be at least 5 s shorter than WORKER_STOP_TIMEOUT"],
        ),
        (
            {"TASK_PROTECTION_EXPIRES_MINUTES": "240"},
            ["TASK_PROTECTION_EXPIRES_MINUTES (240) must be between 1"],
        ),
        ({"REMAP_SIGTERM": "SIGQUIT"}, ["REMAP_SIGTERM=SIGQUIT must not be set"]),
    ],
    ids=["visibility-timeout", "soft-shutdown", "protection-expiry", "remap-sigterm"],
)
def test_unsafe_worker_exits_non_zero_and_says_why(
    broker_url: str, overrides: dict[str, str], expected: list[str]
) -> None:
    client = redis.Redis.from_url(broker_url)
    client.flushall()
    safe_env = worker_env(broker_url)
    producer(safe_env).send_task(RECORD_EFFECT, ("untouched",))

    env = {**safe_env, **overrides}
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.app",
        "worker",
        "--without-mingle",
        "--without-gossip",
    ]
    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)

    assert finished.returncode != 0
    for text in expected:
        assert text in finished.stderr, finished.stderr
    pending = producer(safe_env).settings.transport.queue_list_keys("default")
    assert sum(int(client.llen(key)) for key in pending) == 1  # the message was not taken
    assert client.hlen("unacked") == 0
