"""Worker settings from the environment, the start-up safety checks, and the
Celery configuration built from them (no broker needed)."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from beatless.errors import ConfigurationError, InvalidInputError
from beatless.queues.transport import BEATLESS_PRIORITY_STEPS
from beatless.workers.settings import DEFAULT_VISIBILITY_TIMEOUT_SECONDS, WorkerSettings
from worker.app import celery_config, check_worker, create_app, task_time_limits

BASE = {"BROKER_URL": "redis://cache.internal:6379/0"}


def settings(**env: str) -> WorkerSettings:
    return WorkerSettings.from_env({**BASE, **env})


def test_defaults_are_the_documented_contract() -> None:
    s = settings()
    assert s.queues == ("graph", "ingest", "default")
    assert s.concurrency == 1
    assert s.stop_timeout_seconds == 120
    assert s.soft_shutdown_seconds == 100  # a margin below the stop timeout
    assert s.protection.expires_minutes == 60
    assert s.protection.renew_seconds == 1800
    assert not s.protection.enabled
    assert s.metrics_namespace == "Beatless/Workers"
    assert s.result_backend_url == BASE["BROKER_URL"]
    assert s.visibility_timeout_seconds == DEFAULT_VISIBILITY_TIMEOUT_SECONDS
    options = s.kombu_transport_options()
    assert options["priority_steps"] == list(BEATLESS_PRIORITY_STEPS)
    assert options["queue_order_strategy"] == "priority"
    assert options["visibility_timeout"] == DEFAULT_VISIBILITY_TIMEOUT_SECONDS


def test_transport_options_are_shared_with_the_monitor() -> None:
    s = settings(
        BROKER_TRANSPORT_OPTIONS='{"priority_steps": [0, 3, 6, 9], "sep": ":", '
        '"global_keyprefix": "bl:", "visibility_timeout": 9000}'
    )
    options = s.kombu_transport_options()
    assert options["priority_steps"] == [0, 3, 6, 9]
    assert options["sep"] == ":"
    assert options["global_keyprefix"] == "bl:"
    assert s.visibility_timeout_seconds == 9000
    assert s.transport.queue_list_keys("graph") == ["bl:graph", "bl:graph:3", "bl:graph:6", "bl:graph:9"]


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"BROKER_URL": ""}, "BROKER_URL"),
        ({"BROKER_URL": "amqp://rabbit:5672"}, "BROKER_URL"),
        ({"BROKER_URL": "rediss://cache:6379/0?ssl_cert_reqs=none"}, "BROKER_URL"),
        ({"RESULT_BACKEND_URL": "rediss://cache:6379/1?ssl_cert_reqs=CERT_OPTIONAL"}, "RESULT_BACKEND_URL"),
        ({"WORKER_QUEUES": "graph,graph"}, "WORKER_QUEUES"),
        ({"WORKER_QUEUES": " , "}, "WORKER_QUEUES"),
        ({"BROKER_TRANSPORT_OPTIONS": "{not json"}, "BROKER_TRANSPORT_OPTIONS"),
        (
            {"BROKER_TRANSPORT_OPTIONS": '{"visibility_timeout": "1h"}'},
            "BROKER_TRANSPORT_OPTIONS.visibility_timeout",
        ),
        (
            {"BROKER_TRANSPORT_OPTIONS": '{"visibility_timeout": 0}'},
            "BROKER_TRANSPORT_OPTIONS.visibility_timeout",
        ),
        (
            {"BROKER_TRANSPORT_OPTIONS": '{"queue_order_strategy": "round_robin"}'},
            "BROKER_TRANSPORT_OPTIONS.queue_order_strategy",
        ),
        (
            {"BROKER_TRANSPORT_OPTIONS": '{"priority_steps": [3, 6]}'},
            "BROKER_TRANSPORT_OPTIONS.priority_steps",
        ),
        ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY"),
        ({"WORKER_CONCURRENCY": "two"}, "WORKER_CONCURRENCY"),
        ({"WORKER_STOP_TIMEOUT_SECONDS": "121"}, "WORKER_STOP_TIMEOUT_SECONDS"),
        ({"WORKER_SOFT_SHUTDOWN_SECONDS": "-1"}, "WORKER_SOFT_SHUTDOWN_SECONDS"),
        ({"TASK_PROTECTION_EXPIRES_MINUTES": "1h"}, "TASK_PROTECTION_EXPIRES_MINUTES"),
        ({"ECS_AGENT_URI": "169.254.170.2/api/x"}, "ECS_AGENT_URI"),
    ],
)
def test_bad_environment_names_the_variable(env: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        settings(**env)
    assert raised.value.field == field


def test_soft_shutdown_must_end_before_the_stop_timeout() -> None:
    assert settings(WORKER_STOP_TIMEOUT_SECONDS="30").soft_shutdown_seconds == 10
    assert (
        settings(WORKER_STOP_TIMEOUT_SECONDS="30", WORKER_SOFT_SHUTDOWN_SECONDS="25").soft_shutdown_seconds
        == 25
    )
    with pytest.raises(ConfigurationError, match=r"WORKER_SOFT_SHUTDOWN_SECONDS \(120 s\).*stopTimeout"):
        settings(WORKER_SOFT_SHUTDOWN_SECONDS="120")
    with pytest.raises(ConfigurationError, match="WORKER_STOP_TIMEOUT_SECONDS"):
        settings(WORKER_STOP_TIMEOUT_SECONDS="30", WORKER_SOFT_SHUTDOWN_SECONDS="26")


@pytest.mark.parametrize("minutes", ["0", "121", "2880"])
def test_protection_expiry_stays_well_inside_the_cloudformation_window(minutes: str) -> None:
    with pytest.raises(ConfigurationError, match="TASK_PROTECTION_EXPIRES_MINUTES"):
        settings(TASK_PROTECTION_EXPIRES_MINUTES=minutes)


def test_renewal_leaves_room_for_a_retry_before_expiry() -> None:
    assert settings(TASK_PROTECTION_EXPIRES_MINUTES="1", TASK_PROTECTION_RENEW_SECONDS="30").protection
    with pytest.raises(ConfigurationError, match="TASK_PROTECTION_RENEW_SECONDS"):
        settings(TASK_PROTECTION_EXPIRES_MINUTES="1", TASK_PROTECTION_RENEW_SECONDS="31")


def test_visibility_timeout_must_outlast_the_longest_task() -> None:
    s = settings(BROKER_TRANSPORT_OPTIONS='{"visibility_timeout": 3600}')
    s.check_task_limits({"a": 60.0, "b": 3599.0})
    with pytest.raises(ConfigurationError) as raised:
        s.check_task_limits({"a": 60.0, "slow": 3600.0})
    message = str(raised.value)
    assert "visibility_timeout (3600 s)" in message and "task slow may run 3600 s" in message
    with pytest.raises(ConfigurationError, match="tasks without a time limit: forever"):
        s.check_task_limits({"a": 60.0, "forever": None})


def test_the_password_never_shows() -> None:
    s = settings(BROKER_PASSWORD="s3cr3t-token")
    assert s.broker_password == "s3cr3t-token"
    assert s.result_backend_password == "s3cr3t-token"  # the default backend is the broker
    assert "s3cr3t-token" not in repr(s)
    assert "s3cr3t-token" not in str(s.summary())
    own = settings(BROKER_PASSWORD="s3cr3t-token", RESULT_BACKEND_URL="redis://:other@results:6379/1")
    assert own.result_backend_password is None
    assert "other" not in str(own.summary())


def test_celery_configuration_is_safe() -> None:
    conf: dict[str, Any] = celery_config(settings(BROKER_PASSWORD="pw", WORKER_CONCURRENCY="3"))
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["worker_concurrency"] == 3
    assert conf["worker_soft_shutdown_timeout"] == 0  # worker.shutdown runs the soft phase
    # Idempotent tasks go on through a broker reconnect (tests/system/test_operations_on_worker.py).
    assert conf["worker_cancel_long_running_tasks_on_connection_loss"] is False
    assert conf["task_serializer"] == conf["result_serializer"] == "json"
    assert conf["accept_content"] == conf["result_accept_content"] == ["json"]
    assert conf["task_default_priority"] == 5
    assert conf["broker_password"] == conf["redis_password"] == "pw"
    assert "pw" not in conf["broker_url"]
    assert [(q.name, q.routing_key) for q in conf["task_queues"]] == [
        ("graph", "graph"),
        ("ingest", "ingest"),
        ("default", "default"),
    ]
    assert "broker_use_ssl" not in conf


def test_tls_keeps_certificate_verification_on() -> None:
    conf = celery_config(settings(BROKER_URL="rediss://master.cache.amazonaws.com:6379/0"))
    assert conf["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert conf["redis_backend_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def test_every_registered_task_has_a_time_limit_inside_the_visibility_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = create_app(settings())
    limits = task_time_limits(app)
    assert limits["beatless.long_running"] == 3600
    assert limits["beatless.record_effect"] == 60
    assert all(limits.values())  # Celery's own tasks get the default limit
    monkeypatch.setattr("billiard.common.REMAP_SIGTERM", None)
    check_worker(app)
    monkeypatch.setattr("billiard.common.REMAP_SIGTERM", "SIGQUIT")
    with pytest.raises(ConfigurationError, match="REMAP_SIGTERM=SIGQUIT must not be set"):
        check_worker(app)
