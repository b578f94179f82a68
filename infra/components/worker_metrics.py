"""CloudWatch metric objects for what the worker_monitor Lambda and the workers
publish. Names, namespace and dimensions come from `beatless.metrics`, the
same constants the publishers use; alarms, scaling policies and the dashboard
are all built from these functions."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch

from beatless import metrics


def queue_metric(
    namespace: str, name: str, queue: str, *, statistic: str, period: Duration
) -> cloudwatch.Metric:
    """A per-queue metric (PendingTasks, ReservedTasks, BacklogPerTask)."""
    return cloudwatch.Metric(
        namespace=namespace,
        metric_name=name,
        dimensions_map={metrics.QUEUE_DIMENSION: queue},
        statistic=statistic,
        period=period,
        label=f"{name} {queue}",
    )


def service_metric(namespace: str, name: str, *, statistic: str, period: Duration) -> cloudwatch.Metric:
    """A dimensionless metric of the monitored service (RunningTasks, MonitorHeartbeat, ...)."""
    return cloudwatch.Metric(namespace=namespace, metric_name=name, statistic=statistic, period=period)


def queue_sum(
    namespace: str,
    names: Sequence[str],
    queues: Sequence[str],
    *,
    statistic: str,
    period: Duration,
    label: str,
) -> cloudwatch.MathExpression:
    """SUM over queues (and metric names) of each series' `statistic` per period.

    SUM([...]) of an array of series, unlike `a + b`, still yields a value when
    some series lack a datapoint; when all lack one, the result is missing.
    """
    using: dict[str, cloudwatch.IMetric] = {}
    for n, name in enumerate(names):
        for q, queue in enumerate(queues):
            using[f"m{n}q{q}"] = queue_metric(namespace, name, queue, statistic=statistic, period=period)
    return cloudwatch.MathExpression(
        expression=f"SUM([{', '.join(using)}])", using_metrics=using, period=period, label=label
    )


def per_task_search(namespace: str, name: str, dimension: str, *, statistic: str, period: Duration) -> str:
    """A SEARCH over every value of `dimension` (e.g. one series per worker task)."""
    query = f'{{{namespace},{dimension}}} MetricName="{name}"'
    return f"SEARCH('{query}', '{statistic}', {int(period.to_seconds())})"
