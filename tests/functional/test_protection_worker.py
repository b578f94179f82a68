"""ECS task scale-in protection with a real worker process.

One worker (``celery -A worker.app worker``) runs for the whole module
against a stand-in for the ECS agent that speaks the agent's protocol, with
a 1-minute expiry, renewal every second and a short release delay. The tests
run in order; the last one stops the worker.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from beatless import metrics
from beatless.local.servers import RedisServer
from tests.system.worker_agent import TASK_ID, FakeAgent
from tests.system.worker_procs import WorkerProcess, producer, wait_for, worker_env
from worker.app import BeatlessCelery
from worker.tasks import LONG_RUNNING

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def agent() -> Iterator[FakeAgent]:
    with FakeAgent(hang_seconds=2.0) as server:
        yield server


@pytest.fixture(scope="module")
def env(agent: FakeAgent) -> Iterator[dict[str, str]]:
    with RedisServer() as redis_server:
        yield worker_env(
            redis_server.url,
            ECS_AGENT_URI=agent.agent_uri,
            ECS_CONTAINER_METADATA_URI_V4=agent.metadata_uri,
            TASK_PROTECTION_EXPIRES_MINUTES="1",
            TASK_PROTECTION_RENEW_SECONDS="1",
            TASK_PROTECTION_RELEASE_DELAY_SECONDS="0.5",
            TASK_PROTECTION_RETRY_SECONDS="0.5",
            TASK_PROTECTION_TIMEOUT_SECONDS="1",
            WORKER_METRICS_INTERVAL_SECONDS="1",
        )


@pytest.fixture(scope="module")
def worker(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    process = WorkerProcess("protect", env, Path(tmp_path_factory.mktemp("protect")))
    try:
        yield process.start()
    finally:
        process.stop()


@pytest.fixture(scope="module")
def app(env: dict[str, str]) -> BeatlessCelery:
    return producer(env)


def failures(worker: WorkerProcess) -> list[str]:
    return [r[metrics.REASON_DIMENSION] for r in worker.emf() if metrics.PROTECTION_FAILURES in r]


def protected_datapoints(worker: WorkerProcess) -> list[int]:
    return [r[metrics.TASK_PROTECTED] for r in worker.emf() if metrics.TASK_PROTECTED in r]


def test_protects_while_busy_renews_and_releases_when_idle(
    worker: WorkerProcess, agent: FakeAgent, app: BeatlessCelery
) -> None:
    assert agent.snapshot() == []  # an idle worker leaves the agent alone

    result = app.send_task(LONG_RUNNING, (16, 0.25))  # about 4 s of work
    wait_for("the task to report progress", lambda: result.state == "PROGRESS")
    wait_for("protection while the task runs", lambda: agent.protected)
    assert result.get(timeout=30)["applied"] is True
    finished = time.monotonic()
    wait_for("release once idle", lambda: not agent.protected)

    calls = agent.snapshot()
    assert calls[0].body == {"ProtectionEnabled": True, "ExpiresInMinutes": 1}
    assert [c.enabled for c in calls] == [True] * (len(calls) - 1) + [False]
    renewals = [c.at for c in calls if c.enabled]
    assert len(renewals) >= 3  # renewed while busy...
    gaps = [b - a for a, b in itertools.pairwise(renewals)]
    assert all(0.9 <= gap < 60 for gap in gaps), gaps  # ...once a second, far inside the 1-minute expiry
    assert calls[-1].at >= finished - 0.5  # released after the task ended, not before

    wait_for("a TaskProtected=0 datapoint after release", lambda: protected_datapoints(worker)[-1:] == [0])
    emitted = [r for r in worker.emf() if metrics.TASK_PROTECTED in r]
    assert {r[metrics.TASK_ID_DIMENSION] for r in emitted} == {TASK_ID}
    assert 1 in protected_datapoints(worker)
    assert failures(worker) == []


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("blocked", "DEPLOYMENT_BLOCKED"),
        ("denied", "AccessDeniedException"),
        ("error500", "ServerException"),
        ("hang", "Timeout"),
    ],
)
def test_agent_errors_are_counted_and_the_worker_keeps_consuming(
    worker: WorkerProcess, agent: FakeAgent, app: BeatlessCelery, mode: str, reason: str
) -> None:
    agent.mode = mode  # type: ignore[assignment]
    try:
        result = app.send_task(LONG_RUNNING, (6, 0.25))
        assert result.get(timeout=30)["applied"] is True
        wait_for(f"a {reason} failure datapoint", lambda: reason in failures(worker))
    finally:
        agent.mode = "ok"
    # Later transitions are still attempted, and succeed once the agent does.
    before = len(agent.snapshot())
    result = app.send_task(LONG_RUNNING, (6, 0.25))
    wait_for("protection on the next task", lambda: agent.protected)
    assert result.get(timeout=30)["applied"] is True
    wait_for("release after the next task", lambda: not agent.protected)
    assert any(c.enabled and c.answered == "ok" for c in agent.snapshot()[before:])
    assert worker.proc is not None and worker.proc.poll() is None
    assert "Traceback" not in worker.stderr()


def test_releases_protection_at_shutdown(
    worker: WorkerProcess, agent: FakeAgent, env: dict[str, str], tmp_path: Path
) -> None:
    worker.stop()  # the module's worker is done; this one must not race it for the task
    assert not agent.protected
    # A release delay longer than the whole shutdown: only the stop of the
    # protection step can release, as with the 5 s default on ECS.
    stopping = WorkerProcess("stopping", {**env, "TASK_PROTECTION_RELEASE_DELAY_SECONDS": "30"}, tmp_path)
    try:
        stopping.start()
        result = producer(env).send_task(LONG_RUNNING, (40, 0.25))
        wait_for("the task to start", lambda: result.state == "PROGRESS")
        wait_for("protection", lambda: agent.protected)

        stopping.signal(signal.SIGTERM)
        assert stopping.wait(timeout=20) is not None
    finally:
        stopping.stop()

    last = agent.snapshot()[-1]
    assert last.body == {"ProtectionEnabled": False}
    assert not agent.protected
    assert protected_datapoints(stopping)[-1] == 0
    assert "task protection released (worker stopping)" in stopping.stderr()
