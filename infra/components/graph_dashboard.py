"""The operators' dashboard of the graph plane: capacity, instances, orphans, the
monitor's errors, per-node utilisation and the group's own instance counts.
Metric names come from `beatless.graphs.monitor`, the publisher's constants."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from beatless.graphs import monitor

FIVE_MINUTES = Duration.minutes(5)
HOUR = Duration.hours(1)
DAY = Duration.days(1)
WIDTH = 8


class GraphDashboard(Construct):
    def __init__(
        self, scope: Construct, id: str, *, namespace: str, asg_name: str, scale_out_below_slots: int
    ):
        super().__init__(scope, id)

        def graph(name: str, statistic: str, period: Duration) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace=namespace, metric_name=name, statistic=statistic, period=period, label=name
            )

        def group(name: str, label: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(
                namespace="AWS/AutoScaling",
                metric_name=name,
                dimensions_map={"AutoScalingGroupName": asg_name},
                statistic="Maximum",
                period=FIVE_MINUTES,
                label=label,
            )

        query = f'{{{namespace},{monitor.INSTANCE_DIMENSION}}} MetricName="{monitor.INSTANCE_UTILIZATION}"'
        utilization = cloudwatch.MathExpression(
            expression=f"SEARCH('{query}', 'Maximum', {int(FIVE_MINUTES.to_seconds())})",
            using_metrics={},
            label="",
            period=FIVE_MINUTES,
        )
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            default_interval=Duration.days(1),
            widgets=[
                [
                    cloudwatch.GraphWidget(
                        title="Graph capacity (database slots on healthy nodes)",
                        left=[
                            graph(monitor.AVAILABLE_SLOTS, "Minimum", FIVE_MINUTES),
                            graph(monitor.USED_SLOTS, "Maximum", FIVE_MINUTES),
                            graph(monitor.TOTAL_CAPACITY, "Maximum", FIVE_MINUTES),
                        ],
                        left_annotations=[
                            cloudwatch.HorizontalAnnotation(
                                value=scale_out_below_slots, label="scale out below"
                            )
                        ],
                        width=WIDTH,
                    ),
                    cloudwatch.GraphWidget(
                        title="Graph node instances",
                        left=[
                            graph(monitor.HEALTHY_INSTANCES, "Minimum", FIVE_MINUTES),
                            graph(monitor.UNHEALTHY_INSTANCES, "Maximum", FIVE_MINUTES),
                            graph(monitor.INSTANCES_PAST_GRACE, "Maximum", HOUR),
                            group("GroupInServiceInstances", "In service (group)"),
                            group("GroupDesiredCapacity", "Desired (group)"),
                        ],
                        width=WIDTH,
                    ),
                    cloudwatch.GraphWidget(
                        title="Node utilisation (% of capacity)", left=[utilization], width=WIDTH
                    ),
                ],
                [
                    cloudwatch.GraphWidget(
                        title="Graphs removed (deleted past retention, orphaned) per day",
                        left=[graph(monitor.GRAPHS_REMOVED, "Sum", DAY)],
                        width=WIDTH,
                    ),
                    cloudwatch.GraphWidget(
                        title="Graph monitor errors",
                        left=[graph(monitor.MONITOR_ERRORS, "Sum", FIVE_MINUTES)],
                        width=WIDTH,
                    ),
                ],
            ],
        )
