"""The worker_monitor Lambda handler against a real Redis filled by real
Celery producers, with CloudWatch, ECS and Secrets Manager in moto.

What CloudWatch holds is the outcome: a depth datapoint exists only when
Redis was read, 0 included; failures are counted and make the handler raise.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import depth_app
import pytest
import redis
from depth_lambda import PutMetricDataCalls, metric_names, totals, values

import worker_monitor
from beatless import metrics
from beatless.aws import client, session
from beatless.errors import InvalidInputError
from beatless.jobs.resources import reset_resources
from beatless.local.servers import RedisServer, free_port
from beatless.monitor import MetricsPublishError, MonitorFailedError
from beatless.monitor.settings import ENVIRONMENT as MONITOR_ENVIRONMENT
from beatless.queues.connection import BROKER_ENVIRONMENT
from beatless.queues.transport import TransportOptions
from tests.support.lambda_context import FakeLambdaContext

LAYOUT = TransportOptions(priority_steps=(0, 3, 6, 9), sep=":", global_keyprefix="bl:")
ONE = {"samples": 1}
DEPTH_METRICS = {metrics.PENDING_TASKS, metrics.RESERVED_TASKS, metrics.BACKLOG_PER_TASK}

SetEnv = Callable[..., None]


@pytest.fixture
def set_env(monkeypatch: pytest.MonkeyPatch, aws_inprocess: None) -> Iterator[SetEnv]:
    """Sets the monitor's environment (everything else of it unset), with AWS in moto."""

    def apply(**values: str) -> None:
        for name in (*BROKER_ENVIRONMENT, *MONITOR_ENVIRONMENT):
            monkeypatch.delenv(name, raising=False)
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    reset_resources()
    yield apply
    reset_resources()


@pytest.fixture
def lambda_logs() -> Iterator[io.StringIO]:
    """Everything the handler's structured logger writes."""
    buffer = io.StringIO()
    handler = worker_monitor.handler.logger.logger_handler
    previous = handler.setStream(buffer)
    yield buffer
    handler.setStream(previous)


def run(event: Any = None) -> dict[str, Any]:
    result: dict[str, Any] = worker_monitor.handler(
        ONE if event is None else event, FakeLambdaContext(remaining_ms=75_000)
    )
    return result


def fill(url: str, sends: dict[str, list[int]], options: TransportOptions = LAYOUT) -> None:
    app = depth_app.make_app(url, options.as_kombu_options())
    for queue, priorities in sends.items():
        depth_app.send(app, queue, priorities)


def ecs_service(running: int, desired: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # moto reports runningCount from MOTO_ECS_SERVICE_RUNNING at creation
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", str(running))
    ecs = boto3.client("ecs")
    ecs.create_cluster(clusterName="beatless")
    ecs.register_task_definition(
        family="worker", containerDefinitions=[{"name": "worker", "image": "worker", "memory": 512}]
    )
    ecs.create_service(
        cluster="beatless", serviceName="workers", taskDefinition="worker", desiredCount=desired
    )


# --- depth ------------------------------------------------------------------------


def test_an_empty_reachable_redis_publishes_zero(redis_url: str, set_env: SetEnv) -> None:
    set_env(BROKER_URL=redis_url, QUEUES="graph,ingest")

    summary = run()

    assert {
        key: summary[key] for key in ("readings", "queues", "running_tasks", "desired_tasks", "errors")
    } == {
        "readings": 1,
        "queues": {"graph": {"pending": 0, "reserved": 0}, "ingest": {"pending": 0, "reserved": 0}},
        "running_tasks": None,
        "desired_tasks": None,
        "errors": 0,
    }
    cloudwatch = client("cloudwatch")
    for queue in ("graph", "ingest"):
        assert values(cloudwatch, metrics.PENDING_TASKS, queue) == [0.0]
        assert values(cloudwatch, metrics.RESERVED_TASKS, queue) == [0.0]
    assert values(cloudwatch, metrics.MONITOR_HEARTBEAT) == [1.0]
    assert values(cloudwatch, metrics.MONITOR_ERRORS) == [0.0]
    # no ECS configured: nothing about tasks is made up
    assert metric_names(cloudwatch).isdisjoint({metrics.BACKLOG_PER_TASK, metrics.RUNNING_TASKS})


def test_depth_of_celery_queues_in_one_high_resolution_call(redis_url: str, set_env: SetEnv) -> None:
    fill(redis_url, {"graph": list(range(10)), "ingest": [9, 9, 0]})
    set_env(
        BROKER_URL=redis_url,
        QUEUES="graph,ingest,default",
        BROKER_TRANSPORT_OPTIONS=json.dumps(LAYOUT.as_kombu_options()),
        METRICS_NAMESPACE="Beatless/Test",
    )
    calls = PutMetricDataCalls().attach(session())
    before = datetime.now(UTC)

    summary = run()

    assert summary["queues"] == {
        "graph": {"pending": 10, "reserved": 0},
        "ingest": {"pending": 3, "reserved": 0},
        "default": {"pending": 0, "reserved": 0},
    }
    assert len(calls.calls) == 1
    assert calls.calls[0]["Namespace"] == "Beatless/Test"
    data = calls.data
    assert {d["StorageResolution"] for d in data} == {1}
    assert len({d["Timestamp"] for d in data}) == 1
    assert before <= data[0]["Timestamp"] <= datetime.now(UTC)
    cloudwatch = client("cloudwatch")
    assert values(cloudwatch, metrics.PENDING_TASKS, "graph", "Beatless/Test") == [10.0]
    assert values(cloudwatch, metrics.PENDING_TASKS, "ingest", "Beatless/Test") == [3.0]


def test_unreachable_redis_publishes_no_depth_counts_an_error_and_raises(set_env: SetEnv) -> None:
    set_env(BROKER_URL=f"redis://127.0.0.1:{free_port()}/0", QUEUES="graph")

    with pytest.raises(MonitorFailedError, match="redis") as info:
        run()

    cloudwatch = client("cloudwatch")
    assert metric_names(cloudwatch) == {metrics.MONITOR_ERRORS}  # no depth, no heartbeat
    assert values(cloudwatch, metrics.MONITOR_ERRORS) == [1.0]
    assert info.value.summary.as_dict()["queues"] == {}


def test_a_redis_that_stops_between_runs_is_not_read_as_empty(
    own_redis: RedisServer, set_env: SetEnv
) -> None:
    fill(own_redis.url, {"graph": [1, 2, 3]})
    set_env(
        BROKER_URL=own_redis.url,
        QUEUES="graph",
        BROKER_TRANSPORT_OPTIONS=json.dumps(LAYOUT.as_kombu_options()),
    )
    assert run()["queues"]["graph"]["pending"] == 3
    own_redis.stop()  # the warm Lambda's pooled connection now points at nothing

    with pytest.raises(MonitorFailedError):
        run()

    cloudwatch = client("cloudwatch")
    assert totals(cloudwatch, metrics.PENDING_TASKS, "graph") == (1, 3.0)  # only the real reading
    assert totals(cloudwatch, metrics.MONITOR_HEARTBEAT) == (1, 1.0)
    assert totals(cloudwatch, metrics.MONITOR_ERRORS) == (2, 1.0)


# --- ECS ----------------------------------------------------------------------------


@pytest.mark.parametrize(("running", "desired"), [(2, 5), (0, 1)])
def test_running_tasks_and_backlog_per_task_from_ecs(
    redis_url: str, set_env: SetEnv, monkeypatch: pytest.MonkeyPatch, running: int, desired: int
) -> None:
    ecs_service(running, desired, monkeypatch)
    fill(redis_url, {"graph": [0] * 6, "ingest": [9] * 3})
    set_env(
        BROKER_URL=redis_url,
        QUEUES="graph,ingest",
        BROKER_TRANSPORT_OPTIONS=json.dumps(LAYOUT.as_kombu_options()),
        ECS_CLUSTER="beatless",
        ECS_SERVICE="workers",
    )

    summary = run()

    assert (summary["running_tasks"], summary["desired_tasks"]) == (running, desired)
    cloudwatch = client("cloudwatch")
    assert values(cloudwatch, metrics.RUNNING_TASKS) == [float(running)]
    assert values(cloudwatch, metrics.DESIRED_TASKS) == [float(desired)]
    assert values(cloudwatch, metrics.BACKLOG_PER_TASK, "graph") == [6 / max(running, 1)]
    assert values(cloudwatch, metrics.BACKLOG_PER_TASK, "ingest") == [3 / max(running, 1)]


def test_unreadable_ecs_still_publishes_depth_counts_an_error_and_raises(
    redis_url: str, set_env: SetEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    ecs_service(1, 1, monkeypatch)
    fill(redis_url, {"graph": [0, 0]}, TransportOptions())
    set_env(BROKER_URL=redis_url, QUEUES="graph", ECS_CLUSTER="beatless", ECS_SERVICE="no-such-service")

    with pytest.raises(MonitorFailedError, match="ecs"):
        run()

    cloudwatch = client("cloudwatch")
    assert values(cloudwatch, metrics.PENDING_TASKS, "graph") == [2.0]
    assert values(cloudwatch, metrics.MONITOR_HEARTBEAT) == [1.0]
    assert values(cloudwatch, metrics.MONITOR_ERRORS) == [1.0]
    names = metric_names(cloudwatch)
    assert names.isdisjoint({metrics.RUNNING_TASKS, metrics.DESIRED_TASKS, metrics.BACKLOG_PER_TASK})


# --- secrets --------------------------------------------------------------------------


def test_password_from_secrets_manager_never_logged_and_refetched_after_rotation(
    set_env: SetEnv, lambda_logs: io.StringIO
) -> None:
    first, second = "first-Pa55word-7d1e", "rotated-Pa55word-93ab"
    with RedisServer(password=first) as server:
        fill(server.url, {"graph": [0, 4]}, TransportOptions())
        secrets = boto3.client("secretsmanager")
        arn = secrets.create_secret(Name="beatless/redis-auth", SecretString=first)["ARN"]
        set_env(
            BROKER_URL=f"redis://127.0.0.1:{server.port}/0", QUEUES="graph", BROKER_PASSWORD_SECRET_ARN=arn
        )

        assert run()["queues"]["graph"] == {"pending": 2, "reserved": 0}

        # Rotation: the secret and the server change; the warm Lambda still caches `first`.
        server.stop()
        server.password = second
        server.start()
        fill(server.url, {"graph": [1]}, TransportOptions())
        secrets.put_secret_value(SecretId=arn, SecretString=second)

        summary = run()

    assert summary["queues"]["graph"] == {"pending": 1, "reserved": 0}
    assert summary["errors"] == 0
    logs = lambda_logs.getvalue()
    assert '"summary"' in logs  # the structured run log was written
    for secret in (first, second):
        assert secret not in logs
        assert secret not in json.dumps(summary)


def test_a_password_in_the_url_is_redacted_from_logs(set_env: SetEnv, lambda_logs: io.StringIO) -> None:
    with RedisServer(password="url-pw-5e2c") as server:
        set_env(BROKER_URL=server.url, QUEUES="graph")
        run()
    logs = lambda_logs.getvalue()
    assert f"redis://:***@127.0.0.1:{server.port}/0" in logs
    assert "url-pw-5e2c" not in logs


# --- bad input changes nothing -----------------------------------------------------------


@pytest.fixture
def watched_redis(redis_url: str) -> Iterator[tuple[str, Callable[[], int]]]:
    """The Redis URL, and how many commands it has served since."""
    watcher = redis.Redis.from_url(redis_url)
    watcher.config_resetstat()

    def scripts_run() -> int:
        stats = watcher.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("eval", "evalsha"))

    yield redis_url, scripts_run
    watcher.close()


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"samples": 0}, "samples"),
        ({"samples": 61}, "samples"),
        ({"samples": "all"}, "samples"),
        ({"samples": True}, "samples"),
    ],
)
def test_a_bad_samples_option_names_the_field_and_reads_and_publishes_nothing(
    watched_redis: tuple[str, Callable[[], int]], set_env: SetEnv, event: Any, field: str
) -> None:
    url, scripts_run = watched_redis
    set_env(BROKER_URL=url, QUEUES="graph")

    with pytest.raises(InvalidInputError) as info:
        worker_monitor.handler(event, FakeLambdaContext(remaining_ms=75_000))

    assert info.value.field == field
    assert scripts_run() == 0
    assert metric_names(client("cloudwatch")) == set()


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"BROKER_TRANSPORT_OPTIONS": "{not json"}, "BROKER_TRANSPORT_OPTIONS"),
        (
            {"BROKER_TRANSPORT_OPTIONS": '{"priority_steps": [5, 0]}'},
            "BROKER_TRANSPORT_OPTIONS.priority_steps",
        ),
        ({"QUEUES": ""}, "QUEUES"),
        ({"QUEUES": "graph,graph"}, "QUEUES"),
        ({"ECS_CLUSTER": "beatless"}, "ECS_SERVICE"),
        ({"ECS_SERVICE": "workers"}, "ECS_CLUSTER"),
        ({"SAMPLES": "0"}, "SAMPLES"),
        ({"SAMPLE_INTERVAL_SECONDS": "soon"}, "SAMPLE_INTERVAL_SECONDS"),
        ({"BROKER_URL": "http://127.0.0.1:6379/0"}, "BROKER_URL"),
        ({"BROKER_URL": "rediss://cache.example:6379/0?ssl_cert_reqs=none"}, "BROKER_URL"),
        ({"BROKER_URL": "rediss://cache.example:6379/0?ssl_check_hostname=false"}, "BROKER_URL"),
        ({"BROKER_URL": "redis://:pw@127.0.0.1:6379/0", "BROKER_PASSWORD_SECRET_ARN": "arn:x"}, "BROKER_URL"),
    ],
)
def test_a_malformed_environment_names_the_variable_and_reads_and_publishes_nothing(
    watched_redis: tuple[str, Callable[[], int]], set_env: SetEnv, env: dict[str, str], field: str
) -> None:
    url, scripts_run = watched_redis
    set_env(**{"BROKER_URL": url, "QUEUES": "graph", **env})

    with pytest.raises(InvalidInputError) as info:
        run()

    assert info.value.field == field
    assert scripts_run() == 0
    assert metric_names(client("cloudwatch")) == set()


# --- publishing ----------------------------------------------------------------------------


def test_a_failed_put_metric_data_raises(
    redis_url: str, set_env: SetEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(BROKER_URL=redis_url, QUEUES="graph")
    # CloudWatch (only) unreachable: nothing listens on that port.
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")

    with pytest.raises(MetricsPublishError):
        run()


@pytest.mark.parametrize("samples", [1, 3])
def test_the_samples_option_sets_the_readings_of_a_run(samples: int, redis_url: str, set_env: SetEnv) -> None:
    fill(redis_url, {"graph": [0, 9]}, TransportOptions())
    set_env(BROKER_URL=redis_url, QUEUES="graph", SAMPLES="6", SAMPLE_INTERVAL_SECONDS="1")

    summary = worker_monitor.handler({"samples": samples}, FakeLambdaContext(remaining_ms=75_000))

    assert summary["readings"] == samples == summary["samples"]
    assert summary["queues"] == {"graph": {"pending": 2, "reserved": 0}}
    assert totals(client("cloudwatch"), metrics.MONITOR_HEARTBEAT) == (samples, float(samples))
