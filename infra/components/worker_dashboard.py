"""The operators' dashboard of the worker service: queue depth per queue, task
counts, protected tasks, protection failures and the monitor's own health."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from beatless import metrics
from infra.components.worker_metrics import per_task_search, queue_metric, service_metric

HIGH_RES = Duration.seconds(10)
MINUTE = Duration.minutes(1)


class WorkerDashboard(Construct):
    def __init__(self, scope: Construct, id: str, *, namespace: str, queues: Sequence[str]):
        super().__init__(scope, id)

        def per_queue(name: str) -> list[cloudwatch.IMetric]:
            return [queue_metric(namespace, name, q, statistic="Maximum", period=HIGH_RES) for q in queues]

        def service(name: str, statistic: str, period: Duration = HIGH_RES) -> cloudwatch.IMetric:
            return service_metric(namespace, name, statistic=statistic, period=period)

        tasks_protected = per_task_search(
            namespace, metrics.TASK_PROTECTED, metrics.TASK_ID_DIMENSION, statistic="Maximum", period=MINUTE
        )
        protected = cloudwatch.MathExpression(
            expression=f"SUM({tasks_protected})", using_metrics={}, label="Protected tasks", period=MINUTE
        )
        protection_failures = cloudwatch.MathExpression(
            expression=per_task_search(
                namespace,
                metrics.PROTECTION_FAILURES,
                metrics.REASON_DIMENSION,
                statistic="Sum",
                period=MINUTE,
            ),
            using_metrics={},
            label="",
            period=MINUTE,
        )
        width = 8
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            default_interval=Duration.hours(3),
            widgets=[
                [
                    cloudwatch.GraphWidget(
                        title="Pending tasks per queue", left=per_queue(metrics.PENDING_TASKS), width=width
                    ),
                    cloudwatch.GraphWidget(
                        title="Reserved tasks per queue", left=per_queue(metrics.RESERVED_TASKS), width=width
                    ),
                    cloudwatch.GraphWidget(
                        title="Backlog per running task",
                        left=per_queue(metrics.BACKLOG_PER_TASK),
                        width=width,
                    ),
                ],
                [
                    cloudwatch.GraphWidget(
                        title="Worker tasks",
                        left=[
                            service(metrics.RUNNING_TASKS, "Maximum"),
                            service(metrics.DESIRED_TASKS, "Maximum"),
                            protected,
                        ],
                        width=width,
                    ),
                    cloudwatch.GraphWidget(
                        title="Task protection failures", left=[protection_failures], width=width
                    ),
                    cloudwatch.GraphWidget(
                        title="Monitor heartbeat / errors per minute",
                        left=[
                            service(metrics.MONITOR_HEARTBEAT, "Sum", MINUTE),
                            service(metrics.MONITOR_ERRORS, "Sum", MINUTE),
                        ],
                        width=width,
                    ),
                ],
            ],
        )
