"""The worker monitor's environment contract, as the README and CDK use it: the
broker's variables (`BrokerSettings`, what `Need.BROKER` sets) and the monitor's
own (`MonitorSettings`)."""

from __future__ import annotations

import pytest

from beatless.errors import InvalidInputError
from beatless.jobs import job
from beatless.metrics import DEFAULT_NAMESPACE
from beatless.monitor import MonitorSettings
from beatless.queues.connection import BrokerSettings
from beatless.queues.transport import TransportOptions


def read(env: dict[str, str]) -> tuple[BrokerSettings, MonitorSettings]:
    """What the worker_monitor Lambda reads: its broker resource's settings and its own."""
    return BrokerSettings.from_env(env), MonitorSettings.from_env(env)


def test_every_variable_is_read() -> None:
    broker, settings = read(
        {
            "BROKER_URL": "rediss://cache.internal:6379/0",
            "BROKER_PASSWORD_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:redis-auth",
            "QUEUES": "graph, ingest ,default",
            "BROKER_TRANSPORT_OPTIONS": '{"priority_steps": [0, 5], "sep": ":", "global_keyprefix": "p:"}',
            "METRICS_NAMESPACE": "Beatless/Staging",
            "ECS_CLUSTER": "beatless",
            "ECS_SERVICE": "workers",
            "SAMPLES": "3",
            "SAMPLE_INTERVAL_SECONDS": "20",
        }
    )
    assert broker.queues == ("graph", "ingest", "default")
    assert broker.transport == TransportOptions(priority_steps=(0, 5), sep=":", global_keyprefix="p:")
    assert broker.password_secret_arn is not None and broker.password_secret_arn.endswith(":redis-auth")
    assert (settings.namespace, settings.ecs_cluster, settings.ecs_service) == (
        "Beatless/Staging",
        "beatless",
        "workers",
    )
    assert (settings.samples, settings.sample_interval_seconds) == (3, 20.0)


def test_defaults_match_the_job_registry() -> None:
    broker, settings = read({"BROKER_URL": "redis://127.0.0.1:6379/0", "QUEUES": "graph"})
    registry = job("worker_monitor").environment
    assert settings.samples == int(registry["SAMPLES"])
    assert settings.sample_interval_seconds == float(registry["SAMPLE_INTERVAL_SECONDS"])
    assert settings.namespace == DEFAULT_NAMESPACE
    assert broker.transport == TransportOptions()
    assert not settings.ecs_configured


def test_default_sampling_fits_the_registry_timeout() -> None:
    entry = job("worker_monitor")
    _, settings = read({"BROKER_URL": "redis://h:6379/0", "QUEUES": "graph", **entry.environment})
    last_reading_starts = (settings.samples - 1) * settings.sample_interval_seconds
    assert last_reading_starts < entry.timeout_seconds - 10


BASE = {"BROKER_URL": "redis://h:6379/0", "QUEUES": "a"}


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"BROKER_URL": ""}, "BROKER_URL"),
        ({"QUEUES": " , "}, "QUEUES"),
        ({"QUEUES": "a b"}, "QUEUES"),
        ({"SAMPLES": "61"}, "SAMPLES"),
        ({"SAMPLE_INTERVAL_SECONDS": "0"}, "SAMPLE_INTERVAL_SECONDS"),
        ({"BROKER_TRANSPORT_OPTIONS": "[]"}, "BROKER_TRANSPORT_OPTIONS"),
        ({"BROKER_TRANSPORT_OPTIONS": '{"sep": 1}'}, "BROKER_TRANSPORT_OPTIONS.sep"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        read({**BASE, **env})
    assert info.value.field == field


def test_repr_hides_a_url_password() -> None:
    broker, settings = read({"BROKER_URL": "redis://:hunter2@h:6379/0", "QUEUES": "graph"})
    assert "hunter2" not in repr(broker) + repr(settings)
    assert "redis://:***@h:6379/0" in repr(broker)
