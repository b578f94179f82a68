"""Each registry job's environment on this machine: what infra grants a deployed function
for each of its `Need`s, pointed at the local servers `beatless local` started.

`LocalSystem` names those servers and the resources made in moto (buckets, the ECS service
record, the graph registries, a Scheduler schedule per job, the secrets); `job_environment(job,
system)` is the job's registry defaults plus, need by need, the variables infra would set (the
broker's URL and queues, the database, namespaces, buckets, tables, the graph API key, the
watchdog's WATCHED_JOBS naming the schedules it judges).

What the stacks create, made in moto as they make it:

- `create_dead_letter_queues`: one SQS dead-letter queue per job (`ScheduledJob`: SQS-managed
  encryption, TLS only, 14 days), shared by its schedules;
- `create_schedules`: the Scheduler schedules, each with the job's retry policy and its
  dead-letter queue (the watchdog reads real ones);
- `create_secrets`: the three secrets — the database's (RDS format), the broker's AUTH token
  and the graph API key — with the local servers made to demand what they hold (`LocalSecrets`).
  With them a job is given what a deployed function is given, the secrets' ARNs
  (`DATABASE_SECRET_ARN` with `DATABASE_SSLMODE=verify-full`, `BROKER_PASSWORD_SECRET_ARN`,
  `GRAPH_API_KEY_SECRET_ARN`) and never their values, and reads them from (moto's) Secrets
  Manager through the deployed code; the plain variables of the same need are unset (None),
  whatever this process has. Without them (`LocalSystem.secrets` None) a job is given the plain
  values (`DATABASE_URL`, a password-free `BROKER_URL`, `GRAPH_API_KEY`).

Locally, PostgreSQL (trust for its superuser, as before) gets TLS with a certificate of a
throwaway CA (`DATABASE_SSLROOTCERT`, verified in full) and a login role for the jobs that must
give the secret's password over TLS (a member of the superuser role, as the RDS master user
owns what it migrated); Redis (no password for the workers, as before) gets an ACL user for the
jobs whose password is the AUTH token — named in their `BROKER_URL`, where ElastiCache's token
is the default user's.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from beatless import metrics
from beatless.errors import ConfigurationError
from beatless.jobs import DAY, Job, Need
from beatless.jobs.schedules import needs_watchdog

if TYPE_CHECKING:
    from beatless.local.servers import PostgresServer, RedisServer

SCHEDULE_GROUP = "default"
DEAD_LETTER_RETENTION_SECONDS = 14 * DAY  # ScheduledJob's queue: Duration.days(14)
DATABASE_SECRET = "beatless-local/database"
BROKER_SECRET = "beatless-local/broker-auth-token"
GRAPH_API_KEY_SECRET = "beatless-local/graph-api-key"
JOBS_DATABASE_ROLE = "beatless_jobs"  # the login of the database secret
JOBS_BROKER_USER = "beatless-jobs"  # the Redis ACL user whose password is the AUTH token


def schedule_name(job: Job, label: str = "") -> str:
    return f"beatless-{job.name}" + (f"-{label}" if label else "")


def dead_letter_queue_name(job: Job) -> str:
    return f"beatless-{job.name}-dead-letters"


@dataclass(frozen=True)
class LocalSecrets:
    """The secrets made in moto (`create_secrets`) and what a job needs beside their ARNs."""

    database_arn: str  # DATABASE_SECRET_ARN: RDS format (host, port, username, password, dbname)
    database_ca: str  # DATABASE_SSLROOTCERT: the CA the local server's certificate chains to
    broker_arn: str  # BROKER_PASSWORD_SECRET_ARN: the raw AUTH token
    broker_url: str  # BROKER_URL of the jobs: their ACL user, no password
    graph_api_key_arn: str  # GRAPH_API_KEY_SECRET_ARN: the raw key


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
    secrets: LocalSecrets | None = None  # None: the plain values above (see the module docstring)


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


CREDENTIAL_NEEDS = (Need.BROKER, Need.DATABASE, Need.GRAPH_API)


def _credential_environment(need: Need, system: LocalSystem) -> dict[str, str | None]:
    """A need with a credential: its secret's ARN (as infra gives it) when the system holds the
    secrets, else the plain value; the other of the two unset."""
    held = system.secrets
    if need is Need.BROKER:
        if held is not None:
            return {"BROKER_URL": held.broker_url, "BROKER_PASSWORD_SECRET_ARN": held.broker_arn}
        return {"BROKER_URL": system.broker_url, "BROKER_PASSWORD_SECRET_ARN": None}
    if need is Need.DATABASE:
        if held is not None:  # infra's DatabaseAccess.environment
            return {
                "DATABASE_SECRET_ARN": held.database_arn,
                "DATABASE_SSLMODE": "verify-full",
                "DATABASE_SSLROOTCERT": held.database_ca,
                "DATABASE_URL": None,
            }
        if system.database_url is None:
            raise ConfigurationError("a job needs the database, which this local run did not start")
        return {"DATABASE_URL": system.database_url, "DATABASE_SECRET_ARN": None}
    assert need is Need.GRAPH_API
    if held is not None:
        return {"GRAPH_API_KEY_SECRET_ARN": held.graph_api_key_arn, "GRAPH_API_KEY": None}
    return {"GRAPH_API_KEY": system.graph_api_key, "GRAPH_API_KEY_SECRET_ARN": None}


def _need_environment(need: Need, system: LocalSystem) -> dict[str, str | None]:
    if need in CREDENTIAL_NEEDS:
        env = _credential_environment(need, system)
        return {**env, "QUEUES": system.queues} if need is Need.BROKER else env
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
    if need is Need.WAKE_MONITOR:  # the local runner is the monitor, sampling all the time
        return {"MONITOR_FUNCTION_NAME": None}
    raise ConfigurationError(f"no local environment for the need {need.value!r}")


def job_environment(job: Job, system: LocalSystem) -> dict[str, str | None]:
    """The job's environment here (see the module docstring); None: unset in the job's process."""
    env: dict[str, str | None] = dict(job.environment)
    for need in sorted(job.needs):
        env.update(_need_environment(need, system))
    return env


def tls_only_policy(queue_arn: str) -> dict[str, Any]:
    """The queue policy of `enforce_ssl=True`: any request without TLS is denied."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Action": "sqs:*",
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                "Effect": "Deny",
                "Principal": {"AWS": "*"},
                "Resource": queue_arn,
            }
        ],
    }


def create_dead_letter_queues(sqs: Any, jobs: tuple[Job, ...]) -> dict[str, str]:
    """One dead-letter queue per job, as `ScheduledJob` makes it (in moto): job name -> queue ARN."""
    arns = {}
    for job in jobs:
        url = sqs.create_queue(
            QueueName=dead_letter_queue_name(job),
            Attributes={
                "SqsManagedSseEnabled": "true",
                "MessageRetentionPeriod": str(DEAD_LETTER_RETENTION_SECONDS),
            },
        )["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(tls_only_policy(arn))})
        arns[job.name] = arn
    return arns


def create_schedules(
    scheduler: Any,
    jobs: tuple[Job, ...],
    function_arn_prefix: str,
    role_arn: str,
    dead_letter_arns: Mapping[str, str],
) -> None:
    """One Scheduler schedule per registry schedule, as the jobs stack makes them (in moto): the
    job's retry policy, its dead-letter queue (`dead_letter_arns`: `create_dead_letter_queues`)."""
    for job in jobs:
        for schedule in job.schedules:
            scheduler.create_schedule(
                Name=schedule_name(job, schedule.label),
                GroupName=SCHEDULE_GROUP,
                ScheduleExpression=schedule.expression,
                ScheduleExpressionTimezone=schedule.timezone,
                FlexibleTimeWindow={"Mode": "OFF"},
                State="ENABLED",
                Target={
                    "Arn": f"{function_arn_prefix}{job.name}",
                    "RoleArn": role_arn,
                    "RetryPolicy": {
                        "MaximumRetryAttempts": job.retry.scheduler_attempts,
                        "MaximumEventAgeInSeconds": job.retry.max_event_age_seconds,
                    },
                    "DeadLetterConfig": {"Arn": dead_letter_arns[job.name]},
                },
            )


def create_secrets(
    secretsmanager: Any,
    *,
    database: PostgresServer,
    broker: RedisServer,
    graph_api_key: str,
    dbname: str = "postgres",
) -> LocalSecrets:
    """The stacks' three secrets in moto, each value one the local server demands (see the
    module docstring): `database` gets TLS and the jobs' login role, `broker` the jobs' ACL user;
    `graph_api_key` is the key the graph nodes were started with."""
    password = secrets.token_hex(24)
    ca = _serve_database_tls(database, password)
    credentials = {
        "engine": "postgres",
        "host": "127.0.0.1",
        "port": database.port,
        "username": JOBS_DATABASE_ROLE,
        "password": password,
        "dbname": dbname,
    }
    _wait_for_tls_login(credentials, ca)
    token = secrets.token_hex(32)  # the stack's: 64 letters and digits
    broker_url = _broker_user(broker.url, token)

    def create(name: str, description: str, value: str) -> str:
        return str(
            secretsmanager.create_secret(Name=name, Description=description, SecretString=value)["ARN"]
        )

    return LocalSecrets(
        database_arn=create(
            DATABASE_SECRET, "Beatless PostgreSQL credentials (RDS format)", json.dumps(credentials)
        ),
        database_ca=str(ca),
        broker_arn=create(
            BROKER_SECRET, "Redis AUTH token of the Celery broker (the raw token, not JSON)", token
        ),
        broker_url=broker_url,
        graph_api_key_arn=create(
            GRAPH_API_KEY_SECRET, "API key of the Beatless graph nodes (the raw key, not JSON)", graph_api_key
        ),
    )


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _serve_database_tls(server: PostgresServer, password: str) -> Path:
    """TLS on the running server (a reload: open connections carry on) with a certificate for
    127.0.0.1 from a throwaway CA, and the jobs' role, which must log in over TLS with
    `password`. Returns the CA certificate's path."""
    import psycopg
    from psycopg import sql

    tls = server.base / "tls"
    tls.mkdir(exist_ok=True)
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *key, "-days", "7", "-subj", "/CN=Beatless local CA",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=tls)  # fmt: skip
    _openssl("req", *key, "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr", cwd=tls)
    (tls / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "7", "-extfile", "san.ext", "-out", "server.crt", cwd=tls)  # fmt: skip
    owner = server.data.stat()  # the server's user (postgres when started as root)
    for name in ("server.crt", "server.key"):
        shutil.chown(tls / name, owner.st_uid, owner.st_gid)
    (tls / "server.key").chmod(0o600)
    hba = server.data / "pg_hba.conf"
    rules = (
        f"hostssl all {JOBS_DATABASE_ROLE} 127.0.0.1/32 scram-sha-256\n"
        f"host all {JOBS_DATABASE_ROLE} all reject\n"
    )
    if rules not in hba.read_text():
        hba.write_text(rules + hba.read_text())  # first: before the trust rules
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (JOBS_DATABASE_ROLE,)).fetchone()
        verb = sql.SQL("ALTER" if exists else "CREATE")
        admin.execute(
            sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(
                verb, sql.Identifier(JOBS_DATABASE_ROLE), sql.Literal(password)
            )
        )
        admin.execute(sql.SQL("GRANT postgres TO {}").format(sql.Identifier(JOBS_DATABASE_ROLE)))
        settings = {"ssl": "on", "ssl_cert_file": tls / "server.crt", "ssl_key_file": tls / "server.key"}
        for name, value in settings.items():
            admin.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(str(value)))
            )
        admin.execute("SELECT pg_reload_conf()")
    return tls / "ca.crt"


def _wait_for_tls_login(credentials: dict[str, Any], ca: Path, timeout: float = 10.0) -> None:
    """Until the reloaded server takes the jobs' login over verified TLS (or raise its error)."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(
                host=credentials["host"],
                port=credentials["port"],
                dbname=credentials["dbname"],
                user=credentials["username"],
                password=credentials["password"],
                sslmode="verify-full",
                sslrootcert=str(ca),
                connect_timeout=2,
            ):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _broker_user(url: str, password: str) -> str:
    """The jobs' Redis ACL user (every key, channel and command) with `password`; the jobs'
    BROKER_URL: `url` naming that user, without a password."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.execute_command(
            "ACL", "SETUSER", JOBS_BROKER_USER, "reset", "on", f">{password}", "~*", "&*", "+@all"
        )
    finally:
        client.close()
    parts = urlsplit(url)
    netloc = f"{JOBS_BROKER_USER}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
