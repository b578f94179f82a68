"""worker_monitor: Celery queue depth and worker counts to CloudWatch.

Trigger: EventBridge Scheduler, on the schedule of `beatless.jobs.job("worker_monitor")`
(every minute). Side effects: reads Redis (one Lua round trip per reading) and
ECS DescribeServices, and publishes high-resolution metrics (PendingTasks,
ReservedTasks, BacklogPerTask per queue; RunningTasks, DesiredTasks,
MonitorHeartbeat, MonitorErrors) in one PutMetricData per reading, SAMPLES
readings SAMPLE_INTERVAL_SECONDS apart. Idempotency: it only publishes
readings, so a duplicate or retried run adds datapoints and changes nothing.
It raises when any reading failed, after publishing MonitorErrors. A run that
did not raise also prints JobSucceeded = 1 (Beatless/Jobs, dimension Job) as an
EMF log line, which its missed-run alarm reads (no IAM, no extra call).
Event: the Scheduler fields, plus {"samples": n} (1-60) to override SAMPLES.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import Metrics, MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from beatless.aws import client
from beatless.events import Option, parse_scheduled_event, positive_int
from beatless.metrics import JOB_DIMENSION, JOB_SUCCEEDED, JOBS_NAMESPACE
from beatless.monitor import Broker, MonitorFailed, MonitorSettings, broker_for, monitor_for
from beatless.monitor.settings import ENVIRONMENT, MAX_SAMPLES

JOB_NAME = "worker_monitor"
logger = Logger(service=JOB_NAME)
OPTIONS = {"samples": Option(positive_int(MAX_SAMPLES))}

# Settings and the Redis connection (with its cached password) outlive an
# invocation; they are rebuilt only if the environment differs.
_cache: dict[tuple[str | None, ...], tuple[MonitorSettings, Broker]] = {}


def _prepared() -> tuple[MonitorSettings, Broker]:
    key = tuple(os.environ.get(name) for name in ENVIRONMENT)
    if key not in _cache:
        settings = MonitorSettings.from_env(os.environ)
        secrets = client("secretsmanager") if settings.password_secret_arn else None
        reset()
        _cache[key] = (settings, broker_for(settings, secrets))
    return _cache[key]


def reset() -> None:
    """Forget settings and connections (tests that change the environment)."""
    for _, broker in _cache.values():
        broker.close()
    _cache.clear()


@logger.inject_lambda_context
def handler(event: Any, context: Any) -> dict[str, Any]:
    parsed = parse_scheduled_event(event, options=OPTIONS)
    settings, broker = _prepared()
    monitor = monitor_for(
        settings,
        broker,
        # Each reading must fit the sampling grid: 3 s reads, 2 attempts.
        cloudwatch=client("cloudwatch", read_timeout=3, attempts=2),
        ecs=client("ecs", read_timeout=3, attempts=2) if settings.ecs_configured else None,
        logger=logger,
    )
    samples = parsed.options["samples"] or settings.samples
    log_keys = {"broker": settings.redacted_broker_url, "samples": samples}
    try:
        summary = monitor.run(
            samples, settings.sample_interval_seconds, remaining_ms=context.get_remaining_time_in_millis
        )
    except MonitorFailed as failed:
        logger.error(str(failed), extra={**log_keys, "summary": failed.summary.as_dict()})
        raise
    result = summary.as_dict()
    logger.info("worker monitor run", extra={**log_keys, "summary": result})
    _publish_success()
    return result


def _publish_success() -> None:
    # A private provider and no `service` dimension: the alarm selects exactly {Job: worker_monitor}.
    success = Metrics(provider=AmazonCloudWatchEMFProvider(namespace=JOBS_NAMESPACE, service=""))
    success.add_dimension(name=JOB_DIMENSION, value=JOB_NAME)
    success.add_metric(name=JOB_SUCCEEDED, unit=MetricUnit.Count, value=1)
    success.flush_metrics()
