"""The worker monitor: Celery queue depth and worker counts to CloudWatch."""

from __future__ import annotations

from typing import Any

from beatless.monitor.core import (
    Clock,
    EcsUnreadable,
    MetricsPublishFailed,
    Monitor,
    MonitorFailed,
    Reading,
    RunSummary,
    ServiceCounts,
    read_service_counts,
    reading_metrics,
)
from beatless.monitor.settings import MonitorSettings
from beatless.queues.connection import Broker, SecretPassword


def broker_for(settings: MonitorSettings, secretsmanager: Any = None) -> Broker:
    """The depth source `settings` describe (password from Secrets Manager when set)."""
    password = None
    if settings.password_secret_arn:
        if secretsmanager is None:
            raise ValueError("BROKER_PASSWORD_SECRET_ARN is set: a secretsmanager client is required")
        password = SecretPassword(secretsmanager, settings.password_secret_arn)
    return Broker(settings.broker_url, settings.queues, settings.transport, password=password)


def monitor_for(
    settings: MonitorSettings,
    broker: Broker,
    *,
    cloudwatch: Any,
    ecs: Any = None,
    clock: Clock | None = None,
    logger: Any = None,
) -> Monitor:
    """A `Monitor` wired as `settings` say (ECS only when configured)."""
    return Monitor(
        broker,
        cloudwatch,
        namespace=settings.namespace,
        ecs=ecs if settings.ecs_configured else None,
        ecs_cluster=settings.ecs_cluster,
        ecs_service=settings.ecs_service,
        clock=clock or Clock(),
        logger=logger,
    )


__all__ = [
    "Broker",
    "Clock",
    "EcsUnreadable",
    "MetricsPublishFailed",
    "Monitor",
    "MonitorFailed",
    "MonitorSettings",
    "Reading",
    "RunSummary",
    "ServiceCounts",
    "broker_for",
    "monitor_for",
    "read_service_counts",
    "reading_metrics",
]
