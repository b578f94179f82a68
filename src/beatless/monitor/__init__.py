"""The worker monitor (the `worker_monitor` job's core): Celery queue depth and
worker counts to CloudWatch.

- `beatless.monitor.core`: one reading (`Monitor.reading`), a run of readings on
  a fixed grid (`Monitor.run`), what is published (`reading_metrics`);
- `beatless.monitor.job`: `monitor_queues(ctx, settings)`, the work the job
  runtime calls, with the broker and the clients of the job's needs;
- `beatless.monitor.settings`: its own settings (namespace, ECS service, sampling).
"""

from __future__ import annotations

from beatless.monitor.core import (
    Clock,
    EcsUnreadableError,
    MetricsPublishError,
    Monitor,
    MonitorFailedError,
    Reading,
    RunSummary,
    ServiceCounts,
    read_service_counts,
    reading_metrics,
)
from beatless.monitor.settings import MonitorSettings

__all__ = [
    "Clock",
    "EcsUnreadableError",
    "MetricsPublishError",
    "Monitor",
    "MonitorFailedError",
    "MonitorSettings",
    "Reading",
    "RunSummary",
    "ServiceCounts",
    "read_service_counts",
    "reading_metrics",
]
