"""Each registry job's environment on this machine: what infra grants a deployed function
for each of its `Need`s, pointed at the local servers `beatless local` started.

`LocalSystem` names those servers and the resources made in moto (buckets, the ECS service
record, the graph registries, a Scheduler schedule per job); `job_environment(job, system)`
is the job's registry defaults plus, need by need, the variables infra would set (the
broker's URL and queues, the database URL, namespaces, buckets, tables, the graph API key,
the watchdog's WATCHED_JOBS naming the schedules it judges). `create_schedules` makes the
Scheduler schedules in moto as the jobs stack does, so the watchdog reads real ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from beatless import metrics
from beatless.errors import ConfigurationError
from beatless.jobs import Job, Need
from beatless.jobs.schedules import needs_watchdog

SCHEDULE_GROUP = "default"


def schedule_name(job: Job, label: str = "") -> str:
    return f"beatless-{job.name}" + (f"-{label}" if label else "")


@dataclass(frozen=True)
class LocalSystem:
    broker_url: str
    queues: str
    database_url: str | None
    ecs_cluster: str
    ecs_service: str
    storage_bucket: str
    instance_table: str
    graph_table: str
    graph_api_key: str
    uploads_bucket: str
    staging_bucket: str
    backup_bucket: str
    watched_jobs: str  # WATCHED_JOBS


def watched_jobs_json(jobs: tuple[Job, ...]) -> str:
    """WATCHED_JOBS as the jobs stack writes it: every job whose window is too long for an alarm."""
    return json.dumps(
        [
            {
                "name": job.name,
                "schedule": job.schedule.expression,
                "timezone": job.schedule.timezone,
                "period_seconds": job.period_seconds,
                "schedule_name": schedule_name(job, job.schedule.label),
                "schedule_group": SCHEDULE_GROUP,
            }
            for job in jobs
            if needs_watchdog(job.period_seconds)
        ]
    )


def _need_environment(need: Need, system: LocalSystem) -> dict[str, str]:
    if need is Need.BROKER:
        return {"BROKER_URL": system.broker_url, "QUEUES": system.queues}
    if need is Need.DATABASE:
        if system.database_url is None:
            raise ConfigurationError("a job needs the database, which this local run did not start")
        return {"DATABASE_URL": system.database_url}
    if need is Need.METRICS:
        return {"METRICS_NAMESPACE": metrics.DEFAULT_NAMESPACE}
    if need is Need.GRAPH_METRICS:
        from beatless.graphs.monitor import DEFAULT_NAMESPACE

        return {"METRICS_NAMESPACE": DEFAULT_NAMESPACE}
    if need is Need.ECS_READ:
        return {"ECS_CLUSTER": system.ecs_cluster, "ECS_SERVICE": system.ecs_service}
    if need is Need.STORAGE_READ:
        return {"STORAGE_BUCKET": system.storage_bucket}
    if need is Need.METRICS_READ:
        return {"WATCHED_JOBS": system.watched_jobs}
    if need is Need.GRAPH_REGISTRY:
        return {"INSTANCE_REGISTRY_TABLE": system.instance_table, "GRAPH_REGISTRY_TABLE": system.graph_table}
    if need is Need.GRAPH_REGISTRY_READ:
        return {"GRAPH_REGISTRY_TABLE": system.graph_table}
    if need is Need.GRAPH_API:
        return {"GRAPH_API_KEY": system.graph_api_key}
    if need is Need.INGESTION_READ:
        return {"UPLOADS_BUCKET": system.uploads_bucket, "STAGING_BUCKET": system.staging_bucket}
    if need is Need.DATA_RETENTION:
        return {
            "STAGING_BUCKET": system.staging_bucket,
            "BACKUP_BUCKET": system.backup_bucket,
            "GRAPH_REGISTRY_TABLE": system.graph_table,
        }
    if need is Need.EC2_READ:
        return {}
    raise ConfigurationError(f"no local environment for the need {need.value!r}")


def job_environment(job: Job, system: LocalSystem) -> dict[str, str]:
    """The job's environment here (see the module docstring)."""
    env = dict(job.environment)
    for need in sorted(job.needs):
        env.update(_need_environment(need, system))
    return env


def create_schedules(scheduler: Any, jobs: tuple[Job, ...], function_arn_prefix: str, role_arn: str) -> None:
    """One Scheduler schedule per registry schedule, as the jobs stack makes them (in moto)."""
    for job in jobs:
        for schedule in job.schedules:
            scheduler.create_schedule(
                Name=schedule_name(job, schedule.label),
                GroupName=SCHEDULE_GROUP,
                ScheduleExpression=schedule.expression,
                ScheduleExpressionTimezone=schedule.timezone,
                FlexibleTimeWindow={"Mode": "OFF"},
                Target={"Arn": f"{function_arn_prefix}{job.name}", "RoleArn": role_arn},
            )
