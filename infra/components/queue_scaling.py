"""Autoscaling of the worker service on queue depth, built from
`beatless.queues.scaling.ScalingParameters` (the local runner decides with the same
parameters; see that module for the rules and why).

* Scale out: step scaling on a high-resolution alarm over SUM(PendingTasks) of
  the service's queues, breaching at >= 1 pending task, so one task starts a
  worker from zero. Bounds of the steps are relative to the threshold.
* Scale in: ExactCapacity = min_tasks when SUM(PendingTasks + ReservedTasks),
  Maximum per minute, is 0 in every minute of the idle window.
* Both alarms treat missing data as not breaching: no reading, no scaling.

L2 `scale_to_track_custom_metric` rejects metric math and target tracking
cannot leave zero for one task, so these are our own alarms wired to
`StepScalingAction`s.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import ArnFormat, Duration, Fn, Stack
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from constructs import Construct

from beatless import metrics
from beatless.queues.scaling import ScalingParameters
from infra.components.worker_metrics import queue_sum


class QueueDepthScaling(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        service: ecs.FargateService,
        cluster: ecs.ICluster,
        queues: Sequence[str],
        namespace: str,
        params: ScalingParameters,
    ):
        super().__init__(scope, id)
        self.target = appscaling.ScalableTarget(
            self,
            "Target",
            service_namespace=appscaling.ServiceNamespace.ECS,
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=Fn.join("/", ["service", cluster.cluster_name, service.service_name]),
            min_capacity=params.min_tasks,
            max_capacity=params.max_tasks,
            role=iam.Role.from_role_arn(
                self,
                "ServiceLinkedRole",
                Stack.of(self).format_arn(
                    service="iam",
                    region="",
                    resource="role",
                    resource_name="aws-service-role/ecs.application-autoscaling.amazonaws.com/"
                    "AWSServiceRoleForApplicationAutoScaling_ECSService",
                    arn_format=ArnFormat.SLASH_RESOURCE_NAME,
                ),
            ),
        )
        self.scale_out_alarm, self.scale_out = self._build_scale_out(queues, namespace, params)
        self.scale_in_alarm, self.scale_in = self._build_scale_in(queues, namespace, params)

    def _build_scale_out(
        self, queues: Sequence[str], namespace: str, params: ScalingParameters
    ) -> tuple[cloudwatch.Alarm, appscaling.StepScalingAction]:
        period = Duration.seconds(params.scale_out_period_seconds)
        pending = queue_sum(
            namespace,
            [metrics.PENDING_TASKS],
            queues,
            statistic="Maximum",
            period=period,
            label="Pending tasks (all queues)",
        )
        alarm = cloudwatch.Alarm(
            self,
            "ScaleOutAlarm",
            alarm_description=(
                f"Scale the worker service out: >= {params.scale_out_threshold} task(s) pending over "
                f"{', '.join(queues)}."
            ),
            metric=pending,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            threshold=params.scale_out_threshold,
            evaluation_periods=params.scale_out_evaluation_periods,
            datapoints_to_alarm=params.scale_out_datapoints_to_alarm,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        action = appscaling.StepScalingAction(
            self,
            "ScaleOut",
            scaling_target=self.target,
            adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            cooldown=Duration.seconds(params.scale_out_cooldown_seconds),
            metric_aggregation_type=appscaling.MetricAggregationType.MAXIMUM,
        )
        threshold = params.scale_out_threshold
        steps = params.scale_out_steps
        for n, step in enumerate(steps):
            upper = steps[n + 1].pending_at_least - threshold if n + 1 < len(steps) else None
            action.add_adjustment(
                adjustment=step.add_tasks, lower_bound=step.pending_at_least - threshold, upper_bound=upper
            )
        alarm.add_alarm_action(actions.ApplicationScalingAction(action))
        return alarm, action

    def _build_scale_in(
        self, queues: Sequence[str], namespace: str, params: ScalingParameters
    ) -> tuple[cloudwatch.Alarm, appscaling.StepScalingAction]:
        period = Duration.seconds(params.scale_in_period_seconds)
        busy = queue_sum(
            namespace,
            [metrics.PENDING_TASKS, metrics.RESERVED_TASKS],
            queues,
            # Maximum: one busy reading in a period keeps the service up.
            statistic="Maximum",
            period=period,
            label="Pending + reserved tasks (all queues)",
        )
        periods = params.scale_in_evaluation_periods
        alarm = cloudwatch.Alarm(
            self,
            "ScaleInAlarm",
            alarm_description=(
                f"Scale the worker service in to {params.min_tasks}: nothing pending or reserved over "
                f"{', '.join(queues)} for {params.scale_in_idle_seconds} s."
            ),
            metric=busy,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD,
            threshold=0,
            evaluation_periods=periods,
            datapoints_to_alarm=periods,
            # A blind monitor publishes nothing: that must never look idle.
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        action = appscaling.StepScalingAction(
            self,
            "ScaleIn",
            scaling_target=self.target,
            adjustment_type=appscaling.AdjustmentType.EXACT_CAPACITY,
            # Re-invocations while in ALARM re-assert the same capacity.
            cooldown=period,
            metric_aggregation_type=appscaling.MetricAggregationType.MAXIMUM,
        )
        action.add_adjustment(adjustment=params.min_tasks, upper_bound=0)
        alarm.add_alarm_action(actions.ApplicationScalingAction(action))
        return alarm, action
