"""The operators' dashboard of the worker service: queue depth per queue, scaling
activity (the scale-out and scale-in alarms, desired vs running tasks), protected
tasks, protection failures and the monitor's own health.

Scaling activity is what CloudWatch holds of it: each scaling alarm's metric
against its threshold (an alarm in ALARM invokes its step policy) and the service's
desired count, which moves at each step taken. Application Auto Scaling's own
log of activities (each step's cause, a failed step) is not a metric:
`aws application-autoscaling describe-scaling-activities --service-namespace ecs`."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from beatless import metrics
from infra.components.worker_metrics import per_task_search, queue_metric, service_metric

HIGH_RES = Duration.seconds(10)
MINUTE = Duration.minutes(1)
WIDTH = 8


class WorkerDashboard(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        namespace: str,
        queues: Sequence[str],
        scale_out_alarm: cloudwatch.IAlarm,
        scale_in_alarm: cloudwatch.IAlarm,
        max_tasks: int,
    ):
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
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            default_interval=Duration.hours(3),
            widgets=[
                [
                    cloudwatch.GraphWidget(
                        title="Pending tasks per queue", left=per_queue(metrics.PENDING_TASKS), width=WIDTH
                    ),
                    cloudwatch.GraphWidget(
                        title="Reserved tasks per queue", left=per_queue(metrics.RESERVED_TASKS), width=WIDTH
                    ),
                    cloudwatch.GraphWidget(
                        title="Backlog per running task",
                        left=per_queue(metrics.BACKLOG_PER_TASK),
                        width=WIDTH,
                    ),
                ],
                [
                    cloudwatch.AlarmStatusWidget(
                        title="Scaling alarms now (ALARM: its step policy is being invoked)",
                        alarms=[scale_out_alarm, scale_in_alarm],
                        width=3 * WIDTH,
                        height=2,
                    ),
                ],
                [
                    # An alarm widget plots the alarm's own metric (a SUM over the queues) and threshold.
                    cloudwatch.AlarmWidget(
                        title="Scale out: pending tasks (all queues) vs threshold",
                        alarm=scale_out_alarm,
                        left_y_axis=cloudwatch.YAxisProps(min=0),
                        width=WIDTH,
                    ),
                    cloudwatch.AlarmWidget(
                        title="Scale in: pending + reserved tasks (all queues) vs threshold",
                        alarm=scale_in_alarm,
                        left_y_axis=cloudwatch.YAxisProps(min=0),
                        width=WIDTH,
                    ),
                    # Each step moves DesiredTasks; RunningTasks follows as tasks start or stop
                    # (protected tasks finish their work before a scale-in stops them).
                    cloudwatch.GraphWidget(
                        title="Desired vs running tasks",
                        left=[
                            service(metrics.DESIRED_TASKS, "Maximum"),
                            service(metrics.RUNNING_TASKS, "Maximum"),
                            protected,
                        ],
                        left_annotations=[
                            cloudwatch.HorizontalAnnotation(value=max_tasks, label="max tasks")
                        ],
                        left_y_axis=cloudwatch.YAxisProps(min=0),
                        width=WIDTH,
                    ),
                ],
                [
                    cloudwatch.GraphWidget(
                        title="Task protection failures", left=[protection_failures], width=WIDTH
                    ),
                    cloudwatch.GraphWidget(
                        title="Monitor heartbeat / errors per minute",
                        left=[
                            service(metrics.MONITOR_HEARTBEAT, "Sum", MINUTE),
                            service(metrics.MONITOR_ERRORS, "Sum", MINUTE),
                        ],
                        width=WIDTH,
                    ),
                ],
            ],
        )
