"""What a run may open: one provider per `Need`, built lazily from one environment.

Infra grants each need of a registry entry (IAM, network, environment
variables); here each need's environment turns into the thing a job uses:

- `Need.DATABASE`: a PostgreSQL connection per run (`Database.connect`;
  environment: `beatless.db.settings`);
- `Need.BROKER`: the Redis depth source (`Broker`, kept between runs;
  `BROKER_URL`, `BROKER_PASSWORD_SECRET_ARN`, `QUEUES`, `BROKER_TRANSPORT_OPTIONS`);
- `Need.METRICS`: a CloudWatch client for PutMetricData (`METRICS_NAMESPACE`);
- `Need.METRICS_READ`: CloudWatch and Scheduler clients (`WATCHED_JOBS`);
- `Need.ECS_READ`: an ECS client (`ECS_CLUSTER`, `ECS_SERVICE`);
- `Need.STORAGE_READ`: an S3 client (`STORAGE_BUCKET`);
- `Need.GRAPH_REGISTRY`: the DynamoDB resource (`INSTANCE_REGISTRY_TABLE`, `GRAPH_REGISTRY_TABLE`);
- `Need.GRAPH_REGISTRY_READ`: the same resource, granted BatchGetItem on `GRAPH_REGISTRY_TABLE` only;
- `Need.GRAPH_API`: the graph nodes' API key (`GRAPH_API_KEY_SECRET_ARN`; locally `GRAPH_API_KEY`);
- `Need.GRAPH_METRICS`: a CloudWatch client (`METRICS_NAMESPACE`, the graph namespace);
- `Need.EC2_READ`: an EC2 client.

`Resources` builds nothing until a run asks for it, and keeps what it built
(credentials, the Redis connection, boto3 clients) for the life of the
process, so a warm Lambda reuses them. `environment_resources(env)` gives one
`Resources` per distinct value of the variables it reads: the entry points
call it with `os.environ` (the only place the environment is read).
`JobContext` (`beatless.jobs.runtime`) hands a job only what its entry declares.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from beatless.db.settings import ENVIRONMENT as DATABASE_ENVIRONMENT
from beatless.errors import InvalidInputError
from beatless.jobs.registry import Job
from beatless.settings import Env, env_int

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_dynamodb import DynamoDBServiceResource
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_scheduler import EventBridgeSchedulerClient

    from beatless.db.connect import Database
    from beatless.queues.connection import Broker
    from beatless.queues.wake import MonitorWaker

DEFAULT_SAFETY_MARGIN_MS = 10_000
# Everything `Resources` reads; a change of any of these builds new resources.
ENVIRONMENT = (
    *DATABASE_ENVIRONMENT,
    "BROKER_URL",
    "BROKER_PASSWORD_SECRET_ARN",
    "QUEUES",
    "BROKER_TRANSPORT_OPTIONS",
    "GRAPH_API_KEY_SECRET_ARN",
    "GRAPH_API_KEY",
    "JOB_SAFETY_MARGIN_MS",
    "MONITOR_FUNCTION_NAME",
)


class Resources:
    """The providers of one environment (see the module docstring)."""

    def __init__(self, env: Env) -> None:
        self.env: Mapping[str, str] = dict(env)
        # Time kept free before the Lambda deadline, for every job.
        self.safety_margin_ms = env_int(
            env, "JOB_SAFETY_MARGIN_MS", DEFAULT_SAFETY_MARGIN_MS, minimum=0, maximum=600_000
        )
        self._lock = threading.Lock()
        self._database: Database | None = None
        self._broker: Broker | None = None
        self._waker: MonitorWaker | None = None
        self._waker_read = False
        self._graph_api_key: str | None = None

    def database(self, job: Job) -> Database:
        """`Need.DATABASE`: connection settings and cached credentials (a connection per run).

        Raises `InvalidInputError` when the statement timeout does not fit in the job's
        Lambda timeout minus the safety margin (a hung statement must fail the run while
        there is time to report it)."""
        from beatless.db.connect import database_from_env  # psycopg only for jobs with a database

        with self._lock:
            if self._database is None:
                self._database = database_from_env(self.env)
            database = self._database
        budget_ms = job.timeout_seconds * 1000 - self.safety_margin_ms
        if database.settings.statement_timeout_ms >= budget_ms:
            raise InvalidInputError(
                "STATEMENT_TIMEOUT_MS",
                f"{database.settings.statement_timeout_ms} ms does not fit in {job.name}'s "
                f"{job.timeout_seconds} s timeout minus the {self.safety_margin_ms} ms safety margin",
            )
        return database

    def broker(self) -> Broker:
        """`Need.BROKER`: the depth source (its Redis connection and password kept between runs)."""
        from beatless.queues.connection import BrokerSettings, broker_for  # redis only for the broker

        with self._lock:
            if self._broker is None:
                settings = BrokerSettings.from_env(self.env)
                secrets = self.secretsmanager() if settings.password_secret_arn else None
                self._broker = broker_for(settings, secrets)
            return self._broker

    # boto3 only for the jobs that call AWS, and then through the one client factory.
    def cloudwatch(
        self, *, read_timeout: float | None = None, attempts: int | None = None
    ) -> CloudWatchClient:
        from beatless.aws import client

        return client("cloudwatch", **_timeouts(read_timeout, attempts))

    def ecs(self, *, read_timeout: float | None = None, attempts: int | None = None) -> ECSClient:
        from beatless.aws import client

        return client("ecs", **_timeouts(read_timeout, attempts))

    def s3(self, *, read_timeout: float | None = None, attempts: int | None = None) -> S3Client:
        from beatless.aws import client

        return client("s3", **_timeouts(read_timeout, attempts))

    def scheduler(
        self, *, read_timeout: float | None = None, attempts: int | None = None
    ) -> EventBridgeSchedulerClient:
        from beatless.aws import client

        return client("scheduler", **_timeouts(read_timeout, attempts))

    def ec2(self) -> EC2Client:
        from beatless.aws import client

        return client("ec2")

    def dynamodb(self) -> DynamoDBServiceResource:
        from beatless.aws import dynamodb

        return dynamodb()

    def graph_api_key(self) -> str:
        """`Need.GRAPH_API`: the key every graph node request carries (fetched once)."""
        from beatless.graphs.client import api_key_from_env

        with self._lock:
            if self._graph_api_key is None:
                self._graph_api_key = api_key_from_env(self.env, self.secretsmanager)
            return self._graph_api_key

    def monitor_waker(self) -> MonitorWaker | None:
        """`Need.WAKE_MONITOR`: wakes `MONITOR_FUNCTION_NAME` (None where it is unset: locally
        the runner is the monitor)."""
        from beatless.queues.wake import waker_from_env

        with self._lock:
            if not self._waker_read:
                self._waker, self._waker_read = waker_from_env(self.env), True
            return self._waker

    def secretsmanager(self) -> Any:
        from beatless.aws import client

        return client("secretsmanager")

    def close(self) -> None:
        with self._lock:
            if self._broker is not None:
                self._broker.close()
                self._broker = None


def _timeouts(read_timeout: float | None, attempts: int | None) -> dict[str, Any]:
    given: dict[str, Any] = {}
    if read_timeout is not None:
        given["read_timeout"] = read_timeout
    if attempts is not None:
        given["attempts"] = attempts
    return given


_cache: dict[tuple[str | None, ...], Resources] = {}
_cache_lock = threading.Lock()


def environment_resources(env: Env) -> Resources:
    """The process's `Resources` for `env` (the values of `ENVIRONMENT`), built once."""
    key = tuple(env.get(name) for name in ENVIRONMENT)
    with _cache_lock:
        resources = _cache.get(key)
        if resources is None:
            resources = _cache[key] = Resources(env)
        return resources


def reset_resources() -> None:
    """Close and forget every cached `Resources` (tests that change the environment)."""
    with _cache_lock:
        for resources in _cache.values():
            resources.close()
        _cache.clear()
