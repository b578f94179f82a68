"""One run of a scheduled job, the same way for every job.

`run_job(job, event, context, work, *, resources, options=None, logger=None)`:

1. parses the event strictly (`beatless.events`; `dry_run` only when the
   registry entry accepts one, plus the job's own `options`) — a malformed
   event raises `InvalidInputError` naming the field before anything is opened,
   read or changed;
2. opens what the entry declares, and only that (`job.needs`, providers in
   `beatless.jobs.resources`): for `Need.DATABASE` a connection in autocommit
   mode, `application_name` = `beatless:<job>`, statement and
   idle-in-transaction timeouts;
3. clamps the scheduled time to the job's clock (`job.clock`): `as_of` =
   min(scheduled time, now), now being PostgreSQL's `now()` for a job with a
   database and the wall clock otherwise. A console event from the future
   never acts early (expiring holds that still have time, billing a day that is
   not over); EventBridge fires at or after the scheduled time, so a scheduled
   run keeps its exact time. The summary says when a run was clamped;
4. derives the business period from `as_of` as the entry declares
   (`job.period`, `beatless.jobs.periods`) — never from when the run happens;
5. calls `work(ctx)` once; `ctx.deadline` is the Lambda's remaining time minus
   `JOB_SAFETY_MARGIN_MS` (default 10,000);
6. publishes the run's metrics through `publish_job_metrics` — one EMF
   document on stdout (namespace `Beatless/Jobs`, the single dimension `Job`):
   one metric per count `work` recorded (snake_case -> CamelCase), `Remaining`
   when the job reports a backlog, and `JobSucceeded` = 1 when `work` returned.
   When `work` raises, the counts of what it had committed are published
   without `JobSucceeded`, and the error propagates (so the Lambda's Errors
   metric and its alarm see it). A dry run publishes nothing: it must not look
   like a run to the missed-run alarm;
7. returns the summary: job, scheduled_time, as_of, clamped, period, dry_run,
   counts, remaining, complete, and the job's own `details`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from beatless.errors import ConfigurationError
from beatless.events import Option, ScheduledEvent, parse_scheduled_event
from beatless.jobs.deadline import Deadline
from beatless.jobs.periods import Period, period_of
from beatless.jobs.registry import Job, JobClock, Need
from beatless.jobs.resources import Resources
from beatless.metrics import JOB_DIMENSION, JOB_SUCCEEDED, JOBS_NAMESPACE
from beatless.timestamps import iso_z

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_dynamodb import DynamoDBServiceResource
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_scheduler import EventBridgeSchedulerClient

    from beatless.queues.connection import Broker
    from beatless.queues.wake import MonitorWaker

REMAINING_COUNT = "remaining"  # published as the metric Remaining


class UndeclaredNeedError(ConfigurationError):
    """A job used a resource its registry entry does not declare (infra would not grant it)."""


class Logger(Protocol):
    def info(self, msg: str, *args: Any, **kwargs: Any) -> None: ...

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None: ...


@dataclass(frozen=True)
class JobOutcome:
    """What `work` returns: how much it left for the next run, and extra summary keys.

    `remaining=None`: the job has no backlog to speak of (no `Remaining` metric)."""

    remaining: int | None = 0
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class JobContext:
    """What one run of `job` may use. Resources are handed out only for the needs
    the registry entry declares; anything else raises `UndeclaredNeedError`."""

    job: Job
    event: ScheduledEvent
    as_of: datetime  # the scheduled time, clamped to the job's clock: what effects are "as of"
    period: Period
    deadline: Deadline
    resources: Resources
    connection: Any = None  # psycopg.Connection (autocommit) when the job needs the database
    clock: Callable[[], float] = time.monotonic
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def scheduled_time(self) -> datetime:
        """The time the event asked for (before clamping; see `as_of`)."""
        return self.event.scheduled_time

    @property
    def dry_run(self) -> bool:
        return self.event.dry_run

    @property
    def options(self) -> Mapping[str, Any]:
        return self.event.options

    @property
    def conn(self) -> Any:
        """`Need.DATABASE`: the run's connection (effects in `with conn.transaction():`)."""
        self._require(Need.DATABASE)
        return self.connection

    @property
    def broker(self) -> Broker:
        self._require(Need.BROKER)
        return self.resources.broker()

    def cloudwatch(
        self, *, read_timeout: float | None = None, attempts: int | None = None
    ) -> CloudWatchClient:
        self._require(Need.METRICS, Need.METRICS_READ, Need.GRAPH_METRICS)
        return self.resources.cloudwatch(read_timeout=read_timeout, attempts=attempts)

    def ecs(self, *, read_timeout: float | None = None, attempts: int | None = None) -> ECSClient:
        self._require(Need.ECS_READ)
        return self.resources.ecs(read_timeout=read_timeout, attempts=attempts)

    def s3(self) -> S3Client:
        self._require(Need.STORAGE_READ, Need.INGESTION_READ, Need.DATA_RETENTION)
        return self.resources.s3()

    def scheduler(self) -> EventBridgeSchedulerClient:
        self._require(Need.METRICS_READ)
        return self.resources.scheduler()

    def ec2(self) -> EC2Client:
        self._require(Need.EC2_READ)
        return self.resources.ec2()

    def dynamodb(self) -> DynamoDBServiceResource:
        self._require(Need.GRAPH_REGISTRY, Need.GRAPH_REGISTRY_READ, Need.DATA_RETENTION)
        return self.resources.dynamodb()

    def graph_api_key(self) -> str:
        self._require(Need.GRAPH_API)
        return self.resources.graph_api_key()

    def monitor_waker(self) -> MonitorWaker | None:
        self._require(Need.WAKE_MONITOR)
        return self.resources.monitor_waker()

    def add(self, name: str, n: int) -> None:
        """Count `n` committed effects under `name` (snake_case; it becomes a metric)."""
        self.counts[name] = self.counts.get(name, 0) + n

    def _require(self, *needs: Need) -> None:
        if not any(need in self.job.needs for need in needs):
            wanted = " or ".join(need.value for need in needs)
            raise UndeclaredNeedError(
                f"job {self.job.name!r} uses {wanted} without declaring it in the registry "
                "(beatless.jobs): infra grants only what an entry declares"
            )


def metric_name(count: str) -> str:
    """`released_micro` -> `ReleasedMicro`."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", count):
        raise ValueError(f"count names are snake_case, got {count!r}")
    return "".join(part.capitalize() for part in count.split("_"))


def publish_job_metrics(job_name: str, counts: Mapping[str, int], *, succeeded: bool) -> None:
    """The one publisher of job metrics: an EMF document on stdout with every count,
    and JobSucceeded = 1 when `succeeded` (nothing when there is nothing to say).

    A private provider per call (Powertools' `Metrics` shares its metric set across
    instances, which concurrent runs in one process must not), and no `service`
    dimension even if POWERTOOLS_SERVICE_NAME is set: the alarms select exactly
    {Job: <name>}.
    """
    if not counts and not succeeded:
        return
    from aws_lambda_powertools.metrics import Metrics, MetricUnit
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
        AmazonCloudWatchEMFProvider,
    )

    metrics = Metrics(provider=AmazonCloudWatchEMFProvider(namespace=JOBS_NAMESPACE, service=""))
    metrics.add_dimension(name=JOB_DIMENSION, value=job_name)
    for name, value in counts.items():
        metrics.add_metric(name=metric_name(name), unit=MetricUnit.Count, value=value)
    if succeeded:
        metrics.add_metric(name=JOB_SUCCEEDED, unit=MetricUnit.Count, value=1)
    metrics.flush_metrics()


def run_job(
    job: Job,
    event: Any,
    context: Any,
    work: Callable[[JobContext], JobOutcome],
    *,
    resources: Resources,
    options: Mapping[str, Option] | None = None,
    logger: Logger | None = None,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, Any]:
    """Run `work` once for `job` (see the module docstring). Raises on failure."""
    parsed = parse_scheduled_event(event, options=options, allow_dry_run=job.accepts_dry_run, now=now)
    deadline = Deadline.from_context(context, resources.safety_margin_ms, clock)
    connection = None
    if Need.DATABASE in job.needs:
        connection = resources.database(job).connect(application_name=f"beatless:{job.name}")
    try:
        clock_now = _database_now(connection) if job.clock is JobClock.DATABASE else now()
        # An event without a scheduled time (a console test) runs as of the job's own now.
        as_of = min(parsed.scheduled_time, clock_now) if parsed.scheduled_time_given else clock_now
        ctx = JobContext(
            job=job,
            event=parsed,
            as_of=as_of,
            period=period_of(job.period, as_of, job.period_seconds),
            deadline=deadline,
            resources=resources,
            connection=connection,
            clock=clock,
        )
        try:
            outcome = work(ctx)
        except BaseException as error:
            if not parsed.dry_run:
                publish_job_metrics(job.name, ctx.counts, succeeded=False)
            if logger is not None:
                extra = {"counts": ctx.counts, "details": getattr(error, "details", None)}
                logger.exception(f"{job.name} failed", extra=extra)
            raise
    finally:
        if connection is not None:
            connection.close()
    if not parsed.dry_run:
        published = dict(ctx.counts)
        if outcome.remaining is not None:
            published[REMAINING_COUNT] = outcome.remaining
        publish_job_metrics(job.name, published, succeeded=True)
    remaining = outcome.remaining or 0
    summary: dict[str, Any] = {
        "job": job.name,
        "scheduled_time": iso_z(parsed.scheduled_time if parsed.scheduled_time_given else as_of),
        "as_of": iso_z(as_of),
        "clamped": parsed.scheduled_time_given and as_of < parsed.scheduled_time,
        "period": ctx.period.as_dict(),
        "dry_run": parsed.dry_run,
        "counts": dict(ctx.counts),
        "remaining": remaining,
        "complete": remaining == 0,
        **outcome.details,
    }
    if logger is not None:
        logger.info(f"{job.name} run", extra={"summary": summary})
    return summary


def _database_now(connection: Any) -> datetime:
    # statement_timestamp(): the time of this statement, not of an enclosing transaction.
    value: datetime = connection.execute("SELECT statement_timestamp()").fetchone()[0]
    return value.astimezone(UTC)
