"""The worker monitor: queue depth and worker count to CloudWatch.

One *reading* reads every queue's depth from Redis (one round trip), the
worker service's running and desired task counts from ECS (when
configured), and publishes everything in one PutMetricData call, stamped
with the time of the reading. One *run* takes several readings on a fixed
grid (start, start + interval, ...) so the scaling alarms see a fresh
datapoint every few seconds, and stops early when the Lambda is about to
run out of time.

A failure to read is never turned into a number: without Redis there is no
depth (nor heartbeat) datapoint, without ECS no RunningTasks/BacklogPerTask;
`MonitorErrors` counts the failures, the run carries on, and raises
`MonitorFailedError` at its end so the Lambda's Errors metric sees it. A failed
PutMetricData raises at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from beatless import metrics
from beatless.errors import BeatlessError
from beatless.queues.depth import BrokerUnreadableError, DepthReading

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_cloudwatch.type_defs import MetricDatumTypeDef
    from mypy_boto3_ecs import ECSClient

log = logging.getLogger(__name__)

MAX_METRICS_PER_CALL = 1000  # PutMetricData's limit
# Time kept free after the last reading: a reading's Redis and ECS timeouts
# plus a PutMetricData with its retries must fit before the Lambda is killed.
DEFAULT_RESERVE_SECONDS = 8.0


class EcsUnreadableError(BeatlessError):
    """The worker service's task counts could not be read."""


class MetricsPublishError(BeatlessError):
    """CloudWatch refused or did not answer PutMetricData."""


class MonitorFailedError(BeatlessError):
    """At least one reading of the run failed; `summary` says what was read."""

    def __init__(self, message: str, summary: RunSummary) -> None:
        super().__init__(message)
        self.summary = summary

    @property
    def details(self) -> dict[str, Any]:
        """What the run read before it failed (logged by the job runtime)."""
        return self.summary.as_dict()


class DepthSource(Protocol):
    def read(self) -> DepthReading: ...


@dataclass(frozen=True)
class Clock:
    """Time as the monitor sees it; tests inject a fake one."""

    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], datetime] = lambda: datetime.now(UTC)


SYSTEM_CLOCK = Clock()


@dataclass(frozen=True)
class ServiceCounts:
    running: int
    desired: int


def read_service_counts(ecs: ECSClient, cluster: str, service: str) -> ServiceCounts:
    """Running and desired task counts of an ECS service. Raises `EcsUnreadableError`."""
    try:
        response = ecs.describe_services(cluster=cluster, services=[service])
    except (ClientError, BotoCoreError) as exc:
        raise EcsUnreadableError(f"describe_services {cluster}/{service} failed: {exc}") from exc
    failures = response.get("failures") or []
    services = response.get("services") or []
    if failures or len(services) != 1:
        reasons = ", ".join(f"{f.get('arn')}: {f.get('reason')}" for f in failures) or "no service returned"
        raise EcsUnreadableError(f"describe_services {cluster}/{service}: {reasons}")
    found = services[0]
    return ServiceCounts(running=int(found["runningCount"]), desired=int(found["desiredCount"]))


@dataclass(frozen=True)
class Reading:
    """What one reading saw (None: could not be read) and what it published."""

    at: datetime
    depth: DepthReading | None
    service: ServiceCounts | None
    errors: tuple[str, ...]
    metrics_published: int

    @property
    def ok(self) -> bool:
        return not self.errors


def is_idle(reading: Reading) -> bool:
    """No task pending or reserved on any queue, and no worker task running or desired
    (False when either could not be read)."""
    return (
        reading.depth is not None
        and reading.service is not None
        and all(q.pending == 0 and q.reserved == 0 for q in reading.depth.queues.values())
        and reading.service.running == 0
        and reading.service.desired == 0
    )


@dataclass
class RunSummary:
    readings: int = 0
    failed_readings: int = 0
    errors: int = 0
    idle: bool = False  # the first reading found the service idle (and IDLE_SAMPLES applied)
    last_depth: DepthReading | None = None
    last_service: ServiceCounts | None = None
    error_messages: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The handler's JSON summary (counts only, never credentials)."""
        queues = {}
        if self.last_depth is not None:
            queues = {
                name: {"pending": depth.pending, "reserved": depth.reserved}
                for name, depth in self.last_depth.queues.items()
            }
        return {
            "readings": self.readings,
            "queues": queues,
            "running_tasks": self.last_service.running if self.last_service else None,
            "desired_tasks": self.last_service.desired if self.last_service else None,
            "errors": self.errors,
        }


def reading_metrics(
    depth: DepthReading | None, service: ServiceCounts | None, errors: int, at: datetime
) -> list[MetricDatumTypeDef]:
    """The MetricData of one reading: only what was actually read."""

    def datum(name: str, value: float, queue: str | None = None) -> MetricDatumTypeDef:
        item: MetricDatumTypeDef = {
            "MetricName": name,
            "Value": value,
            "Unit": "Count" if name != metrics.BACKLOG_PER_TASK else "None",
            "Timestamp": at,
            "StorageResolution": metrics.STORAGE_RESOLUTION_SECONDS,
        }
        if queue is not None:
            item["Dimensions"] = [{"Name": metrics.QUEUE_DIMENSION, "Value": queue}]
        return item

    data: list[MetricDatumTypeDef] = []
    if depth is not None:
        for queue, counts in depth.queues.items():
            data.append(datum(metrics.PENDING_TASKS, counts.pending, queue))
            data.append(datum(metrics.RESERVED_TASKS, counts.reserved, queue))
            if service is not None:
                data.append(datum(metrics.BACKLOG_PER_TASK, counts.pending / max(service.running, 1), queue))
        data.append(datum(metrics.MONITOR_HEARTBEAT, 1))
    if service is not None:
        data.append(datum(metrics.RUNNING_TASKS, service.running))
        data.append(datum(metrics.DESIRED_TASKS, service.desired))
    data.append(datum(metrics.MONITOR_ERRORS, errors))
    return data


def publish(cloudwatch: CloudWatchClient, namespace: str, data: list[MetricDatumTypeDef]) -> int:
    """PutMetricData, one call unless there are more than 1000 metrics."""
    for start in range(0, len(data), MAX_METRICS_PER_CALL):
        try:
            cloudwatch.put_metric_data(
                Namespace=namespace, MetricData=data[start : start + MAX_METRICS_PER_CALL]
            )
        except (ClientError, BotoCoreError) as exc:
            raise MetricsPublishError(f"PutMetricData to {namespace} failed: {exc}") from exc
    return len(data)


class Monitor:
    """Reads depth (and ECS counts) and publishes them; see the module docstring."""

    def __init__(
        self,
        broker: DepthSource,
        cloudwatch: CloudWatchClient,
        *,
        namespace: str = metrics.DEFAULT_NAMESPACE,
        ecs: ECSClient | None = None,
        ecs_cluster: str | None = None,
        ecs_service: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        logger: Any = None,
    ) -> None:
        if (ecs is None) != (ecs_cluster is None) or (ecs_cluster is None) != (ecs_service is None):
            raise ValueError("ecs, ecs_cluster and ecs_service go together")
        self.broker = broker
        self.cloudwatch = cloudwatch
        self.namespace = namespace
        self.ecs = ecs
        self.ecs_cluster = ecs_cluster
        self.ecs_service = ecs_service
        self.clock = clock
        self.log = logger or log  # the Lambda passes its structured (Powertools) logger

    def reading(self) -> Reading:
        """One reading, published. Read failures are recorded in `Reading.errors`."""
        at = self.clock.now()
        errors: list[str] = []
        depth: DepthReading | None = None
        service: ServiceCounts | None = None
        try:
            depth = self.broker.read()
        except BrokerUnreadableError as exc:
            errors.append(f"redis: {exc}")
        if self.ecs is not None:
            assert self.ecs_cluster is not None and self.ecs_service is not None
            try:
                service = read_service_counts(self.ecs, self.ecs_cluster, self.ecs_service)
            except EcsUnreadableError as exc:
                errors.append(f"ecs: {exc}")
        published = publish(self.cloudwatch, self.namespace, reading_metrics(depth, service, len(errors), at))
        for message in errors:
            self.log.warning("monitor reading failed: %s", message)
        return Reading(at=at, depth=depth, service=service, errors=tuple(errors), metrics_published=published)

    def run(
        self,
        samples: int,
        interval_seconds: float,
        *,
        remaining_ms: Callable[[], int] | None = None,
        reserve_seconds: float = DEFAULT_RESERVE_SECONDS,
        on_reading: Callable[[Reading], None] | None = None,
        idle_samples: int | None = None,
        on_more: Callable[[float], None] | None = None,
    ) -> RunSummary:
        """Up to `samples` readings at start + i * interval — `idle_samples` when the first
        finds the service idle (`is_idle`). A slot that has already passed (a slow reading)
        is skipped rather than crowded in. `on_more(seconds)` is told, before waiting for each
        reading after the first, that it is due within `seconds`. Raises `MonitorFailedError`
        at the end if any reading failed."""
        summary = RunSummary()
        start = self.clock.monotonic()
        slot = 0
        while slot < samples:
            due = start + slot * interval_seconds
            wait = due - self.clock.monotonic()
            if wait < 0 and slot > 0:
                slot = self._next_slot(start, interval_seconds)
                continue
            if slot > 0 and remaining_ms is not None:
                left = remaining_ms() / 1000.0
                if left < max(wait, 0.0) + reserve_seconds:
                    self.log.info(
                        "stopping after %d readings: %.1f s of Lambda time left", summary.readings, left
                    )
                    break
            if slot > 0 and on_more is not None:
                on_more(wait)  # a reading is coming: producers need not wake this monitor
            if wait > 0:
                self.clock.sleep(wait)
            reading = self.reading()
            self._record(summary, reading)
            if on_reading is not None:
                on_reading(reading)
            if slot == 0 and idle_samples is not None and is_idle(reading):
                samples = min(samples, idle_samples)
                summary.idle = True
            slot += 1
        if summary.failed_readings:
            raise MonitorFailedError(
                f"{summary.failed_readings} of {summary.readings} readings failed: "
                + "; ".join(summary.error_messages[:5]),
                summary,
            )
        return summary

    def _next_slot(self, start: float, interval: float) -> int:
        elapsed = self.clock.monotonic() - start
        return int(elapsed // interval) + 1

    @staticmethod
    def _record(summary: RunSummary, reading: Reading) -> None:
        summary.readings += 1
        summary.errors += len(reading.errors)
        if reading.errors:
            summary.failed_readings += 1
            summary.error_messages.extend(reading.errors)
        if reading.depth is not None:
            summary.last_depth = reading.depth
        if reading.service is not None:
            summary.last_service = reading.service
