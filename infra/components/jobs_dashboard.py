"""The operators' dashboard of the scheduled jobs: per job, its successful runs, errors,
throttles and duration; per schedule, its dead-letter queue's depth; and the credits the
jobs allocated and charged (the allocation jobs' GrantedMicro, storage billing's
ChargedMicro, in micro-credits)."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from beatless import metrics
from infra.components.scheduled_job import ScheduledJob

HOUR = Duration.hours(1)
WIDTH = 12


def _job_metric(name: str, job: str, statistic: str = "Sum") -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace=metrics.JOBS_NAMESPACE,
        metric_name=name,
        dimensions_map={metrics.JOB_DIMENSION: job},
        statistic=statistic,
        period=HOUR,
        label=job,
    )


class JobsDashboard(Construct):
    def __init__(self, scope: Construct, id: str, *, jobs: Mapping[str, ScheduledJob]):
        super().__init__(scope, id)
        names = sorted(jobs)

        def graph(title: str, metrics_: list[cloudwatch.IMetric]) -> cloudwatch.GraphWidget:
            return cloudwatch.GraphWidget(title=title, left=metrics_, width=WIDTH, height=6)

        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", default_interval=Duration.days(7))
        self.dashboard.add_widgets(
            graph("Successful runs per hour", [_job_metric(metrics.JOB_SUCCEEDED, n) for n in names]),
            graph(
                "Errors per hour (Lambda)",
                [jobs[n].function.metric_errors(statistic="Sum", period=HOUR, label=n) for n in names],
            ),
        )
        self.dashboard.add_widgets(
            graph(
                "Duration, p50 (Lambda)",
                [jobs[n].function.metric_duration(statistic="p50", period=HOUR, label=n) for n in names],
            ),
            graph(
                "Throttles per hour (Lambda)",
                [jobs[n].function.metric_throttles(statistic="Sum", period=HOUR, label=n) for n in names],
            ),
        )
        self.dashboard.add_widgets(
            graph(
                "Dead-letter queue depth, per job's schedules",
                [
                    jobs[n].dead_letter_queue.metric_approximate_number_of_messages_visible(
                        statistic="Maximum", period=Duration.minutes(5), label=n
                    )
                    for n in names
                ],
            ),
            graph(
                "Credits allocated and charged (micro-credits per hour)",
                [
                    *(_job_metric("GrantedMicro", n) for n in names if n.endswith("credit_allocation")),
                    *(_job_metric("ChargedMicro", n) for n in names if n == "storage_billing"),
                ],
            ),
        )
