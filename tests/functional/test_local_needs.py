"""Every registry job runs here with the environment `beatless local` gives it
(`beatless.local.needs.job_environment`): its console dry-run event (its minimal one when
it has none), through the real handler, against real PostgreSQL and Redis and AWS in
moto's server holding what the stacks create — no job lacks a variable or a resource."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from beatless.graphs.registry import create_tables
from beatless.jobs import JOBS, Job
from beatless.local.invoke import invoke
from beatless.local.needs import (
    LocalSystem,
    create_dead_letter_queues,
    create_schedules,
    job_environment,
    watched_jobs_json,
)

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture
def system(aws: str, dsn: str, redis_url: str) -> LocalSystem:
    s3, ecs = boto3.client("s3"), boto3.client("ecs")
    for bucket in ("data", "uploads", "staging", "backups"):
        s3.create_bucket(Bucket=bucket)
    create_tables(boto3.client("dynamodb"), "instances", "graphs")
    ecs.create_cluster(clusterName="local")
    ecs.register_task_definition(
        family="w", containerDefinitions=[{"name": "w", "image": "x", "memory": 512}]
    )
    ecs.create_service(cluster="local", serviceName="workers", taskDefinition="w")
    create_schedules(boto3.client("scheduler"), JOBS, "arn:aws:lambda:us-east-1:123456789012:function:b-",
                     "arn:aws:iam::123456789012:role/s",
                     create_dead_letter_queues(boto3.client("sqs"), JOBS))  # fmt: skip
    return LocalSystem(
        broker_url=redis_url, queues="graph,ingest,default", database_url=dsn, ecs_cluster="local",
        ecs_service="workers", storage_bucket="data", instance_table="instances", graph_table="graphs",
        graph_api_key="local-graph-key-0123456789", uploads_bucket="uploads", staging_bucket="staging",
        backup_bucket="backups", watched_jobs=watched_jobs_json(JOBS),
    )  # fmt: skip


@pytest.mark.parametrize("job", [j for j in JOBS if j.name != "worker_monitor"], ids=lambda j: j.name)
def test_every_job_runs_with_its_local_environment(job: Job, system: LocalSystem) -> None:
    events = REPO / "events" / job.name
    path = events / "dry_run.json" if (events / "dry_run.json").exists() else events / "minimal.json"
    done = invoke(job.name, json.loads(path.read_text()), job_environment(job, system))
    assert done.ok, (done.error, done.logs[-3000:])
    assert done.result["job"] == job.name
