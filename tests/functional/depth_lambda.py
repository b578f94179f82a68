"""Helpers of the worker monitor tests: what CloudWatch (moto) holds or was sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from beatless import metrics


@dataclass
class PutMetricDataCalls:
    """Every PutMetricData request a client sends (observed, not altered)."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    def attach(self, source: Any) -> PutMetricDataCalls:
        """Observe a CloudWatch client, or every client a boto3 session creates from now on."""
        events = source.meta.events if hasattr(source, "meta") else source.events
        events.register("provide-client-params.cloudwatch.PutMetricData", self._record)
        return self

    def _record(self, params: dict[str, Any], **_: Any) -> None:
        self.calls.append(params)

    @property
    def data(self) -> list[dict[str, Any]]:
        return [datum for call in self.calls for datum in call["MetricData"]]


def metric_names(cloudwatch: Any, namespace: str = metrics.DEFAULT_NAMESPACE) -> set[str]:
    listed = cloudwatch.list_metrics(Namespace=namespace)["Metrics"]
    return {m["MetricName"] for m in listed}


def values(
    cloudwatch: Any,
    name: str,
    queue: str | None = None,
    namespace: str = metrics.DEFAULT_NAMESPACE,
    start: datetime | None = None,
) -> list[float]:
    """The datapoints stored for a metric, oldest first (1 s buckets)."""
    dimensions = [{"Name": metrics.QUEUE_DIMENSION, "Value": queue}] if queue else []
    now = datetime.now(UTC)
    points = cloudwatch.get_metric_statistics(
        Namespace=namespace,
        MetricName=name,
        Dimensions=dimensions,
        StartTime=start or now - timedelta(hours=1),
        EndTime=now + timedelta(hours=1),
        Period=1,
        Statistics=["Maximum"],
    )["Datapoints"]
    return [p["Maximum"] for p in sorted(points, key=lambda p: p["Timestamp"])]


def totals(
    cloudwatch: Any, name: str, queue: str | None = None, namespace: str = metrics.DEFAULT_NAMESPACE
) -> tuple[int, float]:
    """(number of datapoints, their sum) stored for a metric in the last hour."""
    dimensions = [{"Name": metrics.QUEUE_DIMENSION, "Value": queue}] if queue else []
    now = datetime.now(UTC)
    points = cloudwatch.get_metric_statistics(
        Namespace=namespace,
        MetricName=name,
        Dimensions=dimensions,
        StartTime=now - timedelta(hours=1),
        EndTime=now + timedelta(hours=1),
        Period=7200,
        Statistics=["SampleCount", "Sum"],
    )["Datapoints"]
    return int(sum(p["SampleCount"] for p in points)), sum(p["Sum"] for p in points)
