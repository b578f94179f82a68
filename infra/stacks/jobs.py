"""The scheduled-jobs stack: one `ScheduledJob` per registry entry, all from one code asset."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from constructs import Construct

from beatless.jobs import Job
from infra.config import LambdaSource
from infra.constructs.lambda_bundle import lambda_code
from infra.constructs.scheduled_job import JobResources, ScheduledJob


def construct_id(job_name: str) -> str:
    """`worker_monitor` -> `WorkerMonitor`: the file name is the identity (never rename it)."""
    return "".join(part.capitalize() for part in job_name.split("_"))


class ScheduledJobsStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        jobs: Sequence[Job],
        source: LambdaSource,
        resources: JobResources,
        alarm_topic: sns.ITopic,
        log_retention: logs.RetentionDays,
        **kwargs: Any,
    ):
        super().__init__(scope, id, **kwargs)
        code = lambda_code(source, [job.name for job in jobs])
        self.jobs = {
            job.name: ScheduledJob(
                self,
                construct_id(job.name),
                job=job,
                code=code,
                resources=resources,
                alarm_topic=alarm_topic,
                log_retention=log_retention,
            )
            for job in jobs
        }
