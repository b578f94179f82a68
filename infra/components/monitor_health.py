"""The stale-heartbeat alarm: the worker_monitor publishes `MonitorHeartbeat`
once per successful reading; when a whole window passes without one, the
monitor is blind (Lambda not running, Redis or ECS unreadable) and the scaling
alarms, which treat missing data as not breaching, have stopped scaling.
Missing data is *breaching* here, so silence itself raises the alarm."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_sns as sns
from constructs import Construct

from beatless import metrics
from beatless.queues.scaling import ScalingParameters
from infra.components.worker_metrics import service_metric


class MonitorHealth(Construct):
    def __init__(
        self, scope: Construct, id: str, *, namespace: str, scaling: ScalingParameters, topic: sns.ITopic
    ):
        super().__init__(scope, id)
        periods = scaling.heartbeat_evaluation_periods
        self.heartbeat_alarm = cloudwatch.Alarm(
            self,
            "StaleHeartbeat",
            alarm_description=(
                f"No successful worker_monitor reading for {scaling.heartbeat_stale_seconds} s: queue depth "
                "is unknown and the worker service is not being scaled."
            ),
            metric=service_metric(
                namespace, metrics.MONITOR_HEARTBEAT, statistic="Sum", period=Duration.seconds(60)
            ),
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            threshold=1,
            evaluation_periods=periods,
            datapoints_to_alarm=periods,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
        )
        self.heartbeat_alarm.add_alarm_action(actions.SnsAction(topic))
        self.heartbeat_alarm.add_ok_action(actions.SnsAction(topic))
