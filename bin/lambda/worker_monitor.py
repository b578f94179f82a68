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
EMF log line (the job runtime), which its missed-run alarm reads (no IAM, no
extra call). The Redis connection and its password outlive an invocation.
Event: the Scheduler fields, plus {"samples": n} (1-60) to override SAMPLES.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

from aws_lambda_powertools import Logger

from beatless.events import Option, positive_int
from beatless.jobs import job
from beatless.jobs.resources import environment_resources
from beatless.jobs.runtime import run_job
from beatless.monitor.job import monitor_queues
from beatless.monitor.settings import MAX_SAMPLES, MonitorSettings

JOB = job("worker_monitor")
logger = Logger(service=JOB.name)
OPTIONS = {"samples": Option(positive_int(MAX_SAMPLES))}


@logger.inject_lambda_context
def handler(event: Any, context: Any) -> dict[str, Any]:
    settings = MonitorSettings.from_env(os.environ)
    work = partial(monitor_queues, settings=settings, logger=logger)
    resources = environment_resources(os.environ)
    return run_job(JOB, event, context, work, resources=resources, options=OPTIONS, logger=logger)
