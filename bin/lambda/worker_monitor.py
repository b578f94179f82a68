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

from functools import partial

from beatless.events import Option, positive_int
from beatless.jobs.entry import JobHandler, Work
from beatless.monitor.job import monitor_queues
from beatless.monitor.settings import MAX_SAMPLES, MonitorSettings
from beatless.settings import Env

OPTIONS = {"samples": Option(positive_int(MAX_SAMPLES))}


def work_for(env: Env) -> Work:
    return partial(monitor_queues, settings=MonitorSettings.from_env(env), logger=handler.logger)


handler = JobHandler("worker_monitor", work_for, options=OPTIONS)
