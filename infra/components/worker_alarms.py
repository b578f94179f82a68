"""Alarms on the worker service's resources: CPU and memory near their limits.

Average CPUUtilization or MemoryUtilization of the service (ECS, 5-minute periods) at or
above `threshold_percent` for three periods in a row: tasks are starved, operations slow
down or are killed (memory). A service scaled to zero has no data: not breaching."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_sns as sns
from constructs import Construct

THRESHOLD_PERCENT = 90
PERIODS = 3


class WorkerResourceAlarms(Construct):
    def __init__(self, scope: Construct, id: str, *, service: ecs.FargateService, topic: sns.ITopic):
        super().__init__(scope, id)
        period = Duration.minutes(5)
        self.alarms = []
        for name, metric in (
            ("Cpu", service.metric_cpu_utilization(statistic="Average", period=period)),
            ("Memory", service.metric_memory_utilization(statistic="Average", period=period)),
        ):
            alarm = cloudwatch.Alarm(
                self,
                f"{name}Alarm",
                alarm_description=(
                    f"worker tasks' {name.lower()} at or above {THRESHOLD_PERCENT} % for "
                    f"{PERIODS} x 5 minutes"
                ),
                metric=metric,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                threshold=THRESHOLD_PERCENT,
                evaluation_periods=PERIODS,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,  # scaled to zero
            )
            alarm.add_alarm_action(actions.SnsAction(topic))
            self.alarms.append(alarm)
