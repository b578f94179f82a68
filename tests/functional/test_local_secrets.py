"""What `beatless local` makes in moto beside tables, buckets and schedules, as the stacks
make it (`beatless.local.needs`): a dead-letter queue per job, named in the DeadLetterConfig
of each of its schedules, and the three secrets — the database's, the broker's AUTH token,
the graph API key — whose ARNs are all a job is given; a job invoked through the local path
reads each from (moto's) Secrets Manager through the deployed code, against a PostgreSQL that
demands the secret's password over verified TLS and a Redis that demands the token.

The PostgreSQL and Redis servers are this module's own (TLS, a login role and an ACL user are
added to them); moto is the shared server, reset per test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import psycopg
import pytest
import redis

from beatless.graphs.registry import create_tables
from beatless.jobs import JOBS, Need, job
from beatless.jobs.resources import reset_resources
from beatless.local.invoke import Invocation, invoke
from beatless.local.needs import (
    BROKER_SECRET,
    DATABASE_SECRET,
    DEAD_LETTER_RETENTION_SECONDS,
    GRAPH_API_KEY_SECRET,
    JOBS_BROKER_USER,
    JOBS_DATABASE_ROLE,
    LocalSecrets,
    LocalSystem,
    create_dead_letter_queues,
    create_schedules,
    create_secrets,
    dead_letter_queue_name,
    job_environment,
    schedule_name,
    watched_jobs_json,
)
from beatless.local.servers import PostgresServer, RedisServer

GRAPH_API_KEY = "local-graph-key-0123456789abcdef"
UPLOADS, STAGING = "uploads", "staging"


@pytest.fixture(scope="module")
def database() -> Iterator[PostgresServer]:
    from beatless.db.migrate import migrate

    with PostgresServer() as server:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            migrate(conn)
        yield server


@pytest.fixture
def system(aws: str, database: PostgresServer, own_redis: RedisServer) -> Iterator[LocalSystem]:
    """What `_local_system` of the runner makes, on this module's servers."""
    s3 = boto3.client("s3")
    for bucket in (UPLOADS, STAGING):
        s3.create_bucket(Bucket=bucket)
    create_tables(boto3.client("dynamodb"), "instances", "graphs")
    dead_letters = create_dead_letter_queues(boto3.client("sqs"), JOBS)
    create_schedules(boto3.client("scheduler"), JOBS, "arn:aws:lambda:us-east-1:123456789012:function:b-",
                     "arn:aws:iam::123456789012:role/s", dead_letters)  # fmt: skip
    held = create_secrets(
        boto3.client("secretsmanager"), database=database, broker=own_redis, graph_api_key=GRAPH_API_KEY
    )
    reset_resources()
    yield LocalSystem(
        broker_url=own_redis.url, queues="graph,ingest,default", database_url=database.dsn,
        ecs_cluster="local", ecs_service="workers", storage_bucket="data", instance_table="instances",
        graph_table="graphs", graph_api_key=GRAPH_API_KEY, uploads_bucket=UPLOADS, staging_bucket=STAGING,
        backup_bucket="backups", watched_jobs=watched_jobs_json(JOBS), secrets=held,
    )  # fmt: skip
    reset_resources()


def _held(system: LocalSystem) -> LocalSecrets:
    assert system.secrets is not None
    return system.secrets


def _secret(arn: str) -> tuple[str, str]:
    client = boto3.client("secretsmanager")
    return client.describe_secret(SecretId=arn)["Name"], client.get_secret_value(SecretId=arn)["SecretString"]


def test_each_job_has_its_dead_letter_queue_in_its_schedules_dead_letter_config(system: LocalSystem) -> None:
    sqs, scheduler = boto3.client("sqs"), boto3.client("scheduler")
    for entry in JOBS:
        url = sqs.get_queue_url(QueueName=dead_letter_queue_name(entry))["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert attributes["SqsManagedSseEnabled"] == "true"
        assert attributes["MessageRetentionPeriod"] == str(DEAD_LETTER_RETENTION_SECONDS) == "1209600"
        (deny,) = json.loads(attributes["Policy"])["Statement"]
        assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert deny["Resource"] == attributes["QueueArn"]
        for schedule in entry.schedules:  # one queue, shared by all the job's schedules
            target = scheduler.get_schedule(Name=schedule_name(entry, schedule.label))["Target"]
            assert target["DeadLetterConfig"] == {"Arn": attributes["QueueArn"]}
            assert target["RetryPolicy"] == {
                "MaximumRetryAttempts": entry.retry.scheduler_attempts,
                "MaximumEventAgeInSeconds": entry.retry.max_event_age_seconds,
            }
    assert len(sqs.list_queues()["QueueUrls"]) == len(JOBS)


def test_the_jobs_are_given_the_secrets_arns_never_their_values(
    system: LocalSystem, database: PostgresServer
) -> None:
    held = _held(system)
    name, value = _secret(held.database_arn)
    credentials = json.loads(value)
    assert name == DATABASE_SECRET
    assert {k: v for k, v in credentials.items() if k != "password"} == {
        "engine": "postgres", "host": "127.0.0.1", "port": database.port, "username": JOBS_DATABASE_ROLE,
        "dbname": "postgres",
    }  # fmt: skip
    broker_name, token = _secret(held.broker_arn)
    assert broker_name == BROKER_SECRET and len(token) == 64 and token.isalnum()
    assert _secret(held.graph_api_key_arn) == (GRAPH_API_KEY_SECRET, GRAPH_API_KEY)

    given = {entry.name: job_environment(entry, system) for entry in JOBS}
    for entry in JOBS:
        env = given[entry.name]
        values = json.dumps(env)
        assert credentials["password"] not in values and token not in values and GRAPH_API_KEY not in values
        if Need.DATABASE in entry.needs:
            assert env["DATABASE_SECRET_ARN"] == held.database_arn and env["DATABASE_URL"] is None
            assert (env["DATABASE_SSLMODE"], env["DATABASE_SSLROOTCERT"]) == ("verify-full", held.database_ca)
        if Need.BROKER in entry.needs:
            assert env["BROKER_PASSWORD_SECRET_ARN"] == held.broker_arn
            assert urlsplit(str(env["BROKER_URL"])).password is None
        if Need.GRAPH_API in entry.needs:
            assert env["GRAPH_API_KEY_SECRET_ARN"] == held.graph_api_key_arn and env["GRAPH_API_KEY"] is None
    assert {n for n, env in given.items() if "DATABASE_SECRET_ARN" in env} == {
        entry.name for entry in JOBS if Need.DATABASE in entry.needs
    }


def _run(name: str, event: dict[str, Any], system: LocalSystem) -> Invocation:
    reset_resources()  # a cold start: nothing cached from an earlier run
    return invoke(name, event, job_environment(job(name), system))


def test_a_database_job_connects_with_the_secret_alone(system: LocalSystem, database: PostgresServer) -> None:
    done = _run("credit_reservation_cleanup", {"scheduled_time": "2026-11-23T09:15:00Z"}, system)
    assert done.ok, (done.error, done.logs[-3000:])
    # The server checks the secret's password: a secret that no longer holds it fails the run.
    with psycopg.connect(database.dsn, autocommit=True) as admin:
        admin.execute(f"ALTER ROLE {JOBS_DATABASE_ROLE} PASSWORD 'not-the-secrets'")
    done = _run("credit_reservation_cleanup", {"scheduled_time": "2026-11-23T09:15:00Z"}, system)
    assert done.error is not None and "password authentication failed" in done.error["errorMessage"]


def test_the_ingestion_job_sends_to_the_broker_with_the_token_from_the_secret(
    system: LocalSystem, own_redis: RedisServer
) -> None:
    s3 = boto3.client("s3")
    s3.put_object(Bucket=UPLOADS, Key="files/g1/b1/companies.csv", Body=b"id\nc1\n")
    manifest = {"files": [{"table": "Company", "key": "files/g1/b1/companies.csv"}]}
    s3.put_object(Bucket=UPLOADS, Key="batches/g1/b1.json", Body=json.dumps(manifest).encode())
    done = _run("ingestion_queue_processor", {"scheduled_time": "2026-11-23T09:05:00Z"}, system)
    assert done.ok, (done.error, done.logs[-3000:])
    assert done.result["counts"]["enqueued"] == 1
    client = redis.Redis.from_url(own_redis.url)
    try:
        lists = [key for key in client.keys("ingest*") if client.type(key) == b"list"]
        assert sum(int(client.llen(key)) for key in lists) == 1  # the message, on the ingest queue
        user = client.acl_getuser(JOBS_BROKER_USER)
        assert user is not None and user["enabled"]
    finally:
        client.close()
    # Without the token Redis refuses the jobs' user: the password came from the secret.
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(_held(system).broker_url, password="wrong").ping()


def test_the_graph_monitor_reads_the_api_key_from_the_secret(system: LocalSystem) -> None:
    done = _run("kuzu_instance_monitor", {"action": "full_maintenance", "dry_run": True}, system)
    assert done.ok, (done.error, done.logs[-3000:])
