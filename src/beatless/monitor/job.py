"""`monitor_queues`: the work of one `worker_monitor` run, on the job runtime.

The broker (`Need.BROKER`), CloudWatch (`Need.METRICS`) and ECS
(`Need.ECS_READ`) come from the run's context; the readings, their grid and
what is published are `beatless.monitor.core`'s. A failed reading raises
`MonitorFailedError` at the end of the run, after its `MonitorErrors` were
published.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from beatless.jobs.runtime import JobContext, JobOutcome
from beatless.monitor.core import Clock, Monitor
from beatless.monitor.settings import MonitorSettings
from beatless.queues.connection import Broker
from beatless.queues.wake import mark_sampling

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_ecs import ECSClient

log = logging.getLogger(__name__)

# Each reading must fit the sampling grid: 3 s reads, 2 attempts per AWS call.
AWS_READ_TIMEOUT_SECONDS = 3.0
AWS_ATTEMPTS = 2


def monitor_for(
    settings: MonitorSettings,
    broker: Broker,
    *,
    cloudwatch: CloudWatchClient,
    ecs: ECSClient | None = None,
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


def monitor_queues(ctx: JobContext, settings: MonitorSettings, *, logger: Any = None) -> JobOutcome:
    """SAMPLES readings (or the event's `samples`) on the grid; raises if any failed."""
    monitor = monitor_for(
        settings,
        ctx.broker,
        cloudwatch=ctx.cloudwatch(read_timeout=AWS_READ_TIMEOUT_SECONDS, attempts=AWS_ATTEMPTS),
        ecs=(
            ctx.ecs(read_timeout=AWS_READ_TIMEOUT_SECONDS, attempts=AWS_ATTEMPTS)
            if settings.ecs_configured
            else None
        ),
        logger=logger,
    )
    asked = ctx.options.get("samples")  # an event's `samples` is taken as asked, idle or not
    samples = asked or settings.samples
    # The deadline already keeps JOB_SAFETY_MARGIN_MS free for the last reading.
    summary = monitor.run(
        samples,
        settings.sample_interval_seconds,
        remaining_ms=ctx.deadline.remaining_ms,
        reserve_seconds=0,
        idle_samples=None if asked else settings.idle_samples,
        on_more=lambda seconds: _mark_sampling(ctx.broker, seconds, logger or log),
    )
    details = {**summary.as_dict(), "samples": samples, "idle": summary.idle}
    details["broker"] = ctx.broker.redacted_url
    return JobOutcome(remaining=None, details=details)


def _mark_sampling(broker: Broker, seconds: float, logger: Any) -> None:
    """Producers need not wake a monitor that samples (`beatless.queues.wake`); a marker
    Redis refuses only costs an early wake, never a reading."""
    try:
        mark_sampling(broker.client(), seconds, broker.options.global_keyprefix)
    except Exception as error:
        logger.warning("sampling marker not set (%s: %s)", type(error).__name__, error)
