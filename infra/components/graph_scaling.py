"""The graph node group scales out on free capacity.

The kuzu_instance_monitor publishes `AvailableSlots` (Σ capacity -
database_count over healthy nodes; namespace, name and its lack of dimensions
are `beatless.graphs.monitor`'s) every 5 minutes. An alarm on its Minimum
over `PERIOD` below `GraphConfig.scale_out_below_slots` drives a step policy
that adds one node; the estimated warm-up (boot, install, registration, the
next reading) keeps one shortage from adding a node per evaluation.

Missing data is NOT breaching: no datapoint means the monitor did not read the
registry (its Errors and missed-run alarms tell operators), not that capacity
ran out; scaling out on silence would grow the group to its maximum during a
monitor outage without fixing anything. A registry with no healthy node
publishes 0, which does breach.

There is no scale-in policy: a node holds databases (and protects itself
from scale-in while it does); removing nodes is an operator's drain.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from constructs import Construct

from beatless.graphs import monitor
from infra.config import GraphConfig

PERIOD = Duration.seconds(300)
WARM_UP = Duration.minutes(10)


def available_slots(namespace: str, *, statistic: str = "Minimum") -> cloudwatch.Metric:
    """Exactly what the monitor publishes: no dimensions."""
    return cloudwatch.Metric(
        namespace=namespace, metric_name=monitor.AVAILABLE_SLOTS, statistic=statistic, period=PERIOD
    )


class GraphNodeScaling(Construct):
    def __init__(
        self, scope: Construct, id: str, *, group: autoscaling.IAutoScalingGroup, config: GraphConfig
    ):
        super().__init__(scope, id)
        self.alarm = cloudwatch.Alarm(
            self,
            "ScaleOutAlarm",
            alarm_description=(
                f"Add a graph node: fewer than {config.scale_out_below_slots} free database slots on "
                f"healthy nodes ({monitor.AVAILABLE_SLOTS}, Minimum over {int(PERIOD.to_seconds())} s)."
            ),
            metric=available_slots(config.metrics_namespace),
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            threshold=config.scale_out_below_slots,
            evaluation_periods=1,
            datapoints_to_alarm=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,  # see the module docstring
        )
        self.scale_out = autoscaling.StepScalingAction(
            self,
            "ScaleOut",
            auto_scaling_group=group,
            adjustment_type=autoscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            estimated_instance_warmup=WARM_UP,
            metric_aggregation_type=autoscaling.MetricAggregationType.MINIMUM,
        )
        # Bounds are relative to the threshold: any value below it adds one node.
        self.scale_out.add_adjustment(adjustment=1, upper_bound=0)
        self.alarm.add_alarm_action(actions.AutoScalingAction(self.scale_out))
