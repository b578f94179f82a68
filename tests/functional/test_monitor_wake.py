"""An idle worker monitor takes one reading a minute, and producers wake it when work
arrives (`beatless.queues.wake`): the real worker_monitor handler against a real Redis,
ECS and CloudWatch in moto, and the real task API whose launch invokes the monitor
through a real boto3 Lambda client (a stand-in speaking the Invoke API runs the handler).
The first task after a quiet spell reaches CloudWatch without waiting for the next
minute; a burst wakes it once; a failed wake loses no task."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import redis
from depth_lambda import totals, values
from test_worker_monitor import SetEnv, ecs_service, fill, set_env  # noqa: F401 - fixtures

import worker_monitor
from beatless import credits, metrics
from beatless.aws import client, reset_clients
from beatless.errors import InvalidInputError
from beatless.queues.transport import TransportOptions
from beatless.queues.wake import SAMPLING_KEY, WAKE_KEY, claim_wake, mark_sampling
from tests.functional.test_task_api import SCHEMA, environment, queued
from tests.support.jobs import graph
from tests.support.lambda_context import FakeLambdaContext
from tests.support.lambda_endpoint import LambdaEndpoint, lambda_endpoint
from tests.support.task_api import running_api

MONITOR = "beatless-worker-monitor"
QUEUES = "graph,ingest,default"


def monitor_env(redis_url: str, **extra: str) -> dict[str, str]:
    return {"BROKER_URL": redis_url, "QUEUES": QUEUES, "ECS_CLUSTER": "beatless", "ECS_SERVICE": "workers",
            "SAMPLES": "3", "SAMPLE_INTERVAL_SECONDS": "1", "IDLE_SAMPLES": "1", **extra}  # fmt: skip


def run(event: Any) -> dict[str, Any]:
    result: dict[str, Any] = worker_monitor.handler(event, FakeLambdaContext(remaining_ms=75_000))
    return result


def test_an_idle_service_gets_one_reading_and_anything_else_the_full_grid(
    redis_url: str, set_env: SetEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    ecs_service(0, 0, monkeypatch)
    set_env(**monitor_env(redis_url))
    broker = redis.Redis.from_url(redis_url)

    idle = run({})
    assert (idle["readings"], idle["idle"]) == (1, True)
    assert broker.exists(SAMPLING_KEY) == 0  # nothing more to come: a producer would wake it
    assert values(client("cloudwatch"), metrics.PENDING_TASKS, "graph") == [0.0]  # the reading is whole
    assert run({"samples": 2})["readings"] == 2  # a console test takes what it asks for

    fill(redis_url, {"graph": [0]}, TransportOptions())
    started = time.monotonic()
    busy = run({})
    assert (busy["readings"], busy["idle"]) == (3, False)
    assert time.monotonic() - started >= 2  # on its grid: 0, 1, 2 s
    # While it samples, producers leave it be; just after its last reading the marker lapses.
    assert not claim_wake(broker)
    time.sleep(2.5)
    assert broker.exists(SAMPLING_KEY) == 0


def test_running_workers_keep_the_full_grid(
    redis_url: str, set_env: SetEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    ecs_service(1, 1, monkeypatch)  # queues empty, but a worker runs: scale-in needs the readings
    set_env(**monitor_env(redis_url))
    assert run({})["readings"] == 3


def test_without_ecs_the_workers_are_unseen_and_every_run_takes_the_full_grid(
    redis_url: str, set_env: SetEnv
) -> None:
    set_env(**monitor_env(redis_url, ECS_CLUSTER="", ECS_SERVICE=""))
    summary = run({})
    assert (summary["readings"], summary["idle"]) == (3, False)


def test_idle_samples_above_samples_is_refused_naming_it(redis_url: str, set_env: SetEnv) -> None:
    set_env(**monitor_env(redis_url, IDLE_SAMPLES="4"))
    with pytest.raises(InvalidInputError, match="at most 3") as refused:
        run({})
    assert refused.value.field == "IDLE_SAMPLES"
    assert totals(client("cloudwatch"), metrics.MONITOR_HEARTBEAT) == (0, 0.0)  # nothing read or published


@pytest.fixture
def monitor_endpoint(
    redis_url: str, set_env: SetEnv, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LambdaEndpoint]:
    """The monitor function behind the Lambda Invoke stand-in, on an idle service."""
    ecs_service(0, 0, monkeypatch)
    set_env(**monitor_env(redis_url))
    with lambda_endpoint({MONITOR: worker_monitor.handler}) as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", endpoint.url)
        reset_clients()
        yield endpoint
        for call in endpoint.invocations:
            call.done.wait(30)


def api(redis_url: str, dsn: str) -> Any:
    return running_api({**environment(redis_url, dsn), "QUEUES": QUEUES, "MONITOR_FUNCTION_NAME": MONITOR})


def launch(http: httpx.Client, graph_id: str) -> httpx.Response:
    body = {"task_type": "create_graph", "params": {"graph_id": graph_id, "schema": SCHEMA}}
    return http.post("/tasks/launch", json=body)


def test_a_launch_wakes_the_idle_monitor_once_and_its_reading_reaches_cloudwatch(
    monitor_endpoint: LambdaEndpoint, redis_url: str, dsn: str, conn: psycopg.Connection
) -> None:
    for n in range(3):
        graph(conn, f"g{n}", balance_micro=50 * credits.MICRO_PER_CREDIT)
    with api(redis_url, dsn) as (_server, http):
        assert launch(http, "g0").status_code == 202
        (woken,) = monitor_endpoint.invocations
        assert (woken.function, woken.invocation_type, woken.payload) == (MONITOR, "Event", {})
        assert woken.done.wait(30) and woken.error is None, woken.error
        assert woken.result["idle"] is False and woken.result["queues"]["graph"]["pending"] == 1
        assert 1.0 in values(client("cloudwatch"), metrics.PENDING_TASKS, "graph")
        # A burst right after: the monitor samples (or was just woken): no second invocation.
        assert [launch(http, f"g{n}").status_code for n in (1, 2)] == [202, 202]
        assert len(monitor_endpoint.invocations) == 1
        assert len(queued(redis_url)) == 3


def test_a_wake_the_lambda_api_refuses_loses_no_task_and_is_logged(
    monitor_endpoint: LambdaEndpoint, redis_url: str, dsn: str, conn: psycopg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    graph(conn, "g0", balance_micro=50 * credits.MICRO_PER_CREDIT)
    monitor_endpoint.status = 500
    with api(redis_url, dsn) as (_server, http), caplog.at_level(logging.ERROR, "beatless.queues.wake"):
        response = launch(http, "g0")
    assert response.status_code == 202, response.text
    assert len(queued(redis_url)) == 1  # the task is on its queue; the next scheduled reading finds it
    assert any("wake failed: the worker monitor was not invoked" in r.getMessage() for r in caplog.records)
    assert redis.Redis.from_url(redis_url).exists(WAKE_KEY) == 1  # and nobody hammers the API meanwhile


def test_deployments_sharing_a_redis_through_key_prefixes_wake_their_own_monitors(redis_url: str) -> None:
    broker = redis.Redis.from_url(redis_url)
    mark_sampling(broker, 5, prefix="prod:")
    assert not claim_wake(broker, prefix="prod:")  # prod's monitor samples
    assert claim_wake(broker, prefix="staging:")  # staging's does not: woken
    assert not claim_wake(broker, prefix="staging:")  # once per hold
    assert broker.exists("prod:" + SAMPLING_KEY, "staging:" + WAKE_KEY) == 2
