"""Settings of the Celery worker, read once from the environment, and the
safety checks the worker runs before it consumes anything.

No Celery import here: the worker app (`worker/app.py`) turns these settings
into Celery configuration, and the checks take plain numbers.

Environment contract (the CDK task definition sets these):

``BROKER_URL``
    ``redis://host:port/db`` or ``rediss://...`` (TLS; certificate checks stay
    on). No password in it in AWS.
``BROKER_PASSWORD``
    Optional Redis AUTH token. On ECS it is injected from Secrets Manager
    through the task definition's ``secrets``, never a plain value. Never logged.
``RESULT_BACKEND_URL``
    Optional; default: the broker URL. ``BROKER_PASSWORD`` applies to it too
    unless the URL carries its own password.
``WORKER_QUEUES``
    Comma-separated queues this worker consumes; default ``graph,ingest,default``.
``BROKER_TRANSPORT_OPTIONS``
    JSON, the same value the queue-depth monitor gets (priority steps, ``sep``,
    ``global_keyprefix``; kombu's ``visibility_timeout``). Without a
    ``visibility_timeout`` Beatless uses `DEFAULT_VISIBILITY_TIMEOUT_SECONDS`.
``WORKER_CONCURRENCY``
    Pool processes; default 1.
``WORKER_STOP_TIMEOUT_SECONDS``
    The container's ECS ``stopTimeout`` (SIGTERM to SIGKILL); default 120, at
    most 120 on Fargate.
``WORKER_SOFT_SHUTDOWN_SECONDS``
    How long running tasks may still finish after SIGTERM before they are
    requeued; default: the stop timeout minus `DEFAULT_SHUTDOWN_MARGIN_SECONDS`.
``TASK_PROTECTION_EXPIRES_MINUTES``
    ``ExpiresInMinutes`` of ECS task scale-in protection; default 60, at most
    `MAX_PROTECTION_MINUTES` (well under CloudFormation's 3 h update window).
``METRICS_NAMESPACE``
    CloudWatch namespace of the worker's EMF metrics; default ``Beatless/Workers``.
``ECS_AGENT_URI`` / ``ECS_CONTAINER_METADATA_URI_V4``
    Set by ECS itself. Without ``ECS_AGENT_URI`` task protection is off.

Tuning knobs with safe defaults (the task definition need not set them; the
tests shorten them): ``TASK_PROTECTION_RENEW_SECONDS`` (default half the
expiry), ``TASK_PROTECTION_RELEASE_DELAY_SECONDS`` (debounce before
releasing when idle, default 5), ``TASK_PROTECTION_RETRY_SECONDS`` (after a
failed call, default 30), ``TASK_PROTECTION_TIMEOUT_SECONDS`` (read timeout
of an agent call, default 5; connect timeout 2), ``WORKER_METRICS_INTERVAL_SECONDS``
(default 60), ``WORKER_BUSY_POLL_SECONDS`` (default 0.5), ``WORKER_PRESENCE_SECONDS`` (how
often the worker writes its presence line, `beatless.workers.presence`; default 5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from beatless.errors import ConfigurationError, InvalidInputError
from beatless.metrics import DEFAULT_NAMESPACE
from beatless.queues.transport import TransportOptions, validate_broker_url, validate_queue_names
from beatless.settings import Env, env_float, env_int, env_list, env_str, redact_url

PRODUCT_QUEUES: tuple[str, ...] = ("graph", "ingest", "default")
# The Fargate task size of a worker by default (infra's WorkerConfig; the cost report).
DEFAULT_WORKER_CPU_UNITS = 1024
DEFAULT_WORKER_MEMORY_MIB = 2048
DEFAULT_QUEUE = "default"

# Longer than every task's time limit (checked at start-up). A message held by
# a worker that was SIGKILLed comes back only after this long.
DEFAULT_VISIBILITY_TIMEOUT_SECONDS = 7200

FARGATE_MAX_STOP_TIMEOUT_SECONDS = 120
DEFAULT_STOP_TIMEOUT_SECONDS = 120
# Between the end of the soft shutdown and SIGKILL the worker still requeues
# the cancelled tasks' messages and releases its protection (two agent calls
# at most, 2 s connect + read timeout each).
DEFAULT_SHUTDOWN_MARGIN_SECONDS = 20
MIN_SHUTDOWN_MARGIN_SECONDS = 5

DEFAULT_PROTECTION_MINUTES = 60
MIN_PROTECTION_MINUTES = 1
# ECS allows 2880; a protected task blocks a rolling deployment, and
# CloudFormation gives a stack update 3 h before it fails and rolls back.
MAX_PROTECTION_MINUTES = 120

AGENT_CONNECT_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class ProtectionSettings:
    agent_uri: str | None
    metadata_uri: str | None
    expires_minutes: int
    renew_seconds: float
    release_delay_seconds: float
    retry_seconds: float
    connect_timeout_seconds: float
    read_timeout_seconds: float

    @property
    def enabled(self) -> bool:
        return self.agent_uri is not None


@dataclass(frozen=True)
class WorkerSettings:
    broker_url: str
    result_backend_url: str
    queues: tuple[str, ...]
    transport: TransportOptions
    visibility_timeout_seconds: float
    concurrency: int
    stop_timeout_seconds: int
    soft_shutdown_seconds: float
    protection: ProtectionSettings
    metrics_namespace: str = DEFAULT_NAMESPACE
    metrics_interval_seconds: float = 60.0
    busy_poll_seconds: float = 0.5
    presence_seconds: float = 5.0
    broker_password: str | None = field(default=None, repr=False)
    result_backend_password: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Env) -> WorkerSettings:
        """Parse and validate the environment; every error names its variable."""
        broker_url = validate_broker_url(env_str(env, "BROKER_URL"), "BROKER_URL")
        password = env.get("BROKER_PASSWORD") or None
        backend_url = env_str(env, "RESULT_BACKEND_URL") or broker_url
        backend_url = validate_broker_url(backend_url, "RESULT_BACKEND_URL")
        # A password given in the backend URL wins over BROKER_PASSWORD.
        backend_password = None if urlsplit(backend_url).password else password

        queues = validate_queue_names(list(env_list(env, "WORKER_QUEUES", PRODUCT_QUEUES)), "WORKER_QUEUES")
        transport = TransportOptions.from_json(
            env.get("BROKER_TRANSPORT_OPTIONS"), "BROKER_TRANSPORT_OPTIONS"
        )
        visibility = _visibility_timeout(transport)
        _check_queue_order(transport)

        stop_timeout = env_int(
            env,
            "WORKER_STOP_TIMEOUT_SECONDS",
            DEFAULT_STOP_TIMEOUT_SECONDS,
            minimum=MIN_SHUTDOWN_MARGIN_SECONDS,
            maximum=FARGATE_MAX_STOP_TIMEOUT_SECONDS,
        )
        soft = env_float(
            env,
            "WORKER_SOFT_SHUTDOWN_SECONDS",
            float(max(0, stop_timeout - DEFAULT_SHUTDOWN_MARGIN_SECONDS)),
            minimum=0,
        )
        expires = env_int(env, "TASK_PROTECTION_EXPIRES_MINUTES", DEFAULT_PROTECTION_MINUTES)
        protection = ProtectionSettings(
            agent_uri=_optional_http_url(env, "ECS_AGENT_URI"),
            metadata_uri=_optional_http_url(env, "ECS_CONTAINER_METADATA_URI_V4"),
            expires_minutes=expires,
            renew_seconds=env_float(env, "TASK_PROTECTION_RENEW_SECONDS", expires * 60 / 2, minimum=0.1),
            release_delay_seconds=env_float(env, "TASK_PROTECTION_RELEASE_DELAY_SECONDS", 5.0, minimum=0),
            retry_seconds=env_float(env, "TASK_PROTECTION_RETRY_SECONDS", 30.0, minimum=0.1),
            connect_timeout_seconds=AGENT_CONNECT_TIMEOUT_SECONDS,
            read_timeout_seconds=env_float(
                env, "TASK_PROTECTION_TIMEOUT_SECONDS", 5.0, minimum=0.1, maximum=30
            ),
        )
        settings = cls(
            broker_url=broker_url,
            broker_password=password,
            result_backend_url=backend_url,
            result_backend_password=backend_password,
            queues=queues,
            transport=transport,
            visibility_timeout_seconds=visibility,
            concurrency=env_int(env, "WORKER_CONCURRENCY", 1, minimum=1, maximum=64),
            stop_timeout_seconds=stop_timeout,
            soft_shutdown_seconds=soft,
            protection=protection,
            metrics_namespace=env_str(env, "METRICS_NAMESPACE", DEFAULT_NAMESPACE) or DEFAULT_NAMESPACE,
            metrics_interval_seconds=env_float(
                env, "WORKER_METRICS_INTERVAL_SECONDS", 60.0, minimum=0.1, maximum=60
            ),
            busy_poll_seconds=env_float(env, "WORKER_BUSY_POLL_SECONDS", 0.5, minimum=0.01, maximum=10),
            presence_seconds=env_float(env, "WORKER_PRESENCE_SECONDS", 5.0, minimum=0.1, maximum=60),
        )
        settings.check_shutdown()
        settings.check_protection()
        return settings

    @property
    def declared_queues(self) -> tuple[str, ...]:
        """Every queue producers may route to: the product's and this worker's."""
        return PRODUCT_QUEUES + tuple(q for q in self.queues if q not in PRODUCT_QUEUES)

    def kombu_transport_options(self) -> dict[str, Any]:
        """``broker_transport_options``: the monitor's key layout plus worker-only options."""
        options = self.transport.as_kombu_options()
        options["visibility_timeout"] = self.visibility_timeout_seconds
        options["queue_order_strategy"] = "priority"
        return options

    def check_shutdown(self) -> None:
        """The soft shutdown must end before ECS sends SIGKILL, with time to requeue."""
        latest = self.stop_timeout_seconds - MIN_SHUTDOWN_MARGIN_SECONDS
        if self.soft_shutdown_seconds > latest:
            raise ConfigurationError(
                f"WORKER_SOFT_SHUTDOWN_SECONDS ({self.soft_shutdown_seconds:g} s) must be at least "
                f"{MIN_SHUTDOWN_MARGIN_SECONDS} s shorter than WORKER_STOP_TIMEOUT_SECONDS "
                f"({self.stop_timeout_seconds} s, the container's stopTimeout): otherwise ECS kills "
                "the worker before it has requeued its running tasks"
            )

    def check_protection(self) -> None:
        p = self.protection
        if not MIN_PROTECTION_MINUTES <= p.expires_minutes <= MAX_PROTECTION_MINUTES:
            raise ConfigurationError(
                f"TASK_PROTECTION_EXPIRES_MINUTES ({p.expires_minutes}) must be between "
                f"{MIN_PROTECTION_MINUTES} and {MAX_PROTECTION_MINUTES}: ECS accepts 1..2880, but a "
                "protected task holds up a deployment and CloudFormation fails a stack update "
                "after 3 h"
            )
        if p.renew_seconds > p.expires_minutes * 60 / 2:
            raise ConfigurationError(
                f"TASK_PROTECTION_RENEW_SECONDS ({p.renew_seconds:g}) must be at most half of "
                f"TASK_PROTECTION_EXPIRES_MINUTES ({p.expires_minutes} min), so that a failed "
                "renewal can be retried before the protection lapses"
            )

    def check_task_limits(self, limits: Mapping[str, float | None]) -> None:
        """Every task has a time limit, and the visibility timeout outlasts the longest.

        `limits` maps task name to its hard time limit in seconds (None: no limit).
        With ``acks_late`` on Redis a message still unacknowledged after
        ``visibility_timeout`` is handed to another worker while the first
        one is still running it.
        """
        unlimited = sorted(name for name, limit in limits.items() if not limit)
        if unlimited:
            raise ConfigurationError(
                f"tasks without a time limit: {', '.join(unlimited)}; every task needs one, "
                "shorter than BROKER_TRANSPORT_OPTIONS.visibility_timeout "
                f"({self.visibility_timeout_seconds:g} s)"
            )
        if not limits:
            return
        name, longest = max(limits.items(), key=lambda item: (item[1] or 0, item[0]))
        assert longest is not None
        if self.visibility_timeout_seconds <= longest:
            raise ConfigurationError(
                f"BROKER_TRANSPORT_OPTIONS.visibility_timeout ({self.visibility_timeout_seconds:g} s) "
                f"must be longer than the longest task time limit: task {name} may run "
                f"{longest:g} s, and Redis would hand its message to a second worker while the "
                "first is still running it"
            )

    def summary(self) -> dict[str, Any]:
        """What the worker logs at start: no password."""
        return {
            "broker": redact_url(self.broker_url),
            "broker_password": "set" if self.broker_password else "not set",
            "result_backend": redact_url(self.result_backend_url),
            "queues": list(self.queues),
            "visibility_timeout_seconds": self.visibility_timeout_seconds,
            "concurrency": self.concurrency,
            "stop_timeout_seconds": self.stop_timeout_seconds,
            "soft_shutdown_seconds": self.soft_shutdown_seconds,
            "task_protection": (
                f"on, {self.protection.expires_minutes} min, renewed every "
                f"{self.protection.renew_seconds:g} s"
                if self.protection.enabled
                else "off (ECS_AGENT_URI not set)"
            ),
            "metrics_namespace": self.metrics_namespace,
        }


def _visibility_timeout(transport: TransportOptions) -> float:
    extra = dict(transport.extra)
    value = extra.get("visibility_timeout", DEFAULT_VISIBILITY_TIMEOUT_SECONDS)
    field_name = "BROKER_TRANSPORT_OPTIONS.visibility_timeout"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(field_name, f"must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise InvalidInputError(field_name, f"must be a positive number of seconds, got {value!r}")
    return float(value)


def _check_queue_order(transport: TransportOptions) -> None:
    strategy = dict(transport.extra).get("queue_order_strategy", "priority")
    if strategy != "priority":
        raise InvalidInputError(
            "BROKER_TRANSPORT_OPTIONS.queue_order_strategy",
            f"must be 'priority' (or absent) so that urgent tasks are served first, got {strategy!r}",
        )


def _optional_http_url(env: Env, name: str) -> str | None:
    value = env_str(env, name)
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(name, f"must be an http:// URL, got {value!r}")
    return value.rstrip("/")
