"""Typed, validated configuration of the Beatless CDK app.

`infra/app.py` is the only code that reads CDK context and the environment; it
hands a getter to `Config.from_context`, which parses every value (context
given on the command line arrives as text) and names the context key of a bad
one. Stacks and constructs receive these frozen objects, nothing else.

Context keys (all optional): account, region, vpcId, workerImage, alarmEmail,
metricsNamespace, workerQueues, workerConcurrency, workerCpu, workerMemoryMiB,
minWorkerTasks, maxWorkerTasks, scaleInIdleSeconds, visibilityTimeoutSeconds,
brokerNodeType, brokerPort, logRetentionDays, and for the scheduled jobs:

* monthlyAllocationDay (1-28) / monthlyAllocationHour (0-23, UTC): when the
  monthly credit allocations run (`beatless.jobs.build_jobs`); default 1 / 3.
* databaseSecretArn + databaseSecurityGroupId (both, and vpcId): use an
  existing PostgreSQL instead of creating RDS. The secret is in the RDS format
  (JSON host, port, username, password, dbname) and its owner rotates it; the
  security group is one the database already accepts connections from, which
  the Lambdas that need the database join.
* databaseInstanceType (default t4g.medium), databasePort (default 5433; not
  5432, which scanners probe first).
* databaseCaBundle: a PEM file with the RDS certificate authorities (the RDS
  "global bundle"), copied into the Lambda bundle so the jobs verify the
  database's certificate (sslmode verify-full). Default:
  infra/certs/rds-global-bundle.pem when that file exists. Without it the jobs
  verify against the public trust store, which the RDS CAs are not part of:
  they refuse a direct RDS instance (never connect unverified). Synth warns.
* storageBucketName: an existing customer data bucket instead of creating one.
* graph plane (the graph stack, `infra/stacks/graph.py`): graphInstanceType
  (default r7g.large: Graviton; `ladybug` ships aarch64 and x86_64 wheels, the
  image follows the type's architecture), graphMinNodes (1), graphMaxNodes (4),
  graphDataVolumeGiB (200: each node's encrypted gp3 data volume),
  graphNodeCapacity (50 databases per node), graphScaleOutBelowSlots (5: add
  a node when fewer free slots remain; at most graphNodeCapacity, so one new
  node clears the alarm), graphBackupRetentionDays (30: how long replaced
  backup versions are kept).
* testEventRegistry: `create` (default) makes the EventBridge schema registry
  `lambda-testevent-schemas` where the Lambda console keeps shareable test
  events (kept when the stack is deleted); `existing` when the console already
  created it in this account and region (a `create` deploy then fails with
  "already exists": deploy again with `-c testEventRegistry=existing`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beatless import metrics
from beatless.errors import InvalidInputError
from beatless.graphs import monitor as graph_monitor
from beatless.jobs import JOBS, MONTHLY_ALLOCATION, Job, MonthlyTime, build_jobs
from beatless.queues.scaling import ScalingParameters
from beatless.queues.transport import TransportOptions, validate_queue_names
from beatless.workers import settings as worker_settings

REPO_ROOT = Path(__file__).resolve().parent.parent

# Synth without credentials uses this account/region; cdk.context.json holds
# its availability-zone lookup so `npx cdk synth` needs no AWS call.
PLACEHOLDER_ACCOUNT = "123456789012"
PLACEHOLDER_REGION = "us-east-1"

# Fargate sends SIGKILL this long after SIGTERM (at most 120 s). One constant
# is both the container's stopTimeout and the worker's WORKER_STOP_TIMEOUT_SECONDS
# (from which the worker derives its soft-shutdown time): the worker's own default.
WORKER_STOP_TIMEOUT_SECONDS = worker_settings.DEFAULT_STOP_TIMEOUT_SECONDS
FARGATE_MAX_STOP_TIMEOUT_SECONDS = worker_settings.FARGATE_MAX_STOP_TIMEOUT_SECONDS

# Redis redelivers an unacknowledged task after this long, so it must exceed
# the longest task time limit (the worker refuses to start otherwise).
DEFAULT_VISIBILITY_TIMEOUT_SECONDS = int(worker_settings.DEFAULT_VISIBILITY_TIMEOUT_SECONDS)

DEFAULT_QUEUES: tuple[str, ...] = worker_settings.PRODUCT_QUEUES

# CloudWatch Logs' retention values (days) and their aws_logs.RetentionDays names.
RETENTION_DAYS: dict[int, str] = {
    1: "ONE_DAY",
    3: "THREE_DAYS",
    5: "FIVE_DAYS",
    7: "ONE_WEEK",
    14: "TWO_WEEKS",
    30: "ONE_MONTH",
    60: "TWO_MONTHS",
    90: "THREE_MONTHS",
    120: "FOUR_MONTHS",
    150: "FIVE_MONTHS",
    180: "SIX_MONTHS",
    365: "ONE_YEAR",
    400: "THIRTEEN_MONTHS",
    545: "EIGHTEEN_MONTHS",
    731: "TWO_YEARS",
    1096: "THREE_YEARS",
    1827: "FIVE_YEARS",
    2192: "SIX_YEARS",
    2557: "SEVEN_YEARS",
    2922: "EIGHT_YEARS",
    3288: "NINE_YEARS",
    3653: "TEN_YEARS",
}

ContextGetter = Callable[[str], Any]


def committed_context(repo_root: Path = REPO_ROOT) -> dict[str, Any]:
    """The context the CDK CLI would pass: cdk.json's "context" plus cdk.context.json.

    `cdk.App()` outside the CLI (tests, benchmarks, `python infra/app.py`)
    reads neither file; without them the VPC silently gets dummy AZs.
    """
    cdk_json = json.loads((repo_root / "cdk.json").read_text())
    context: dict[str, Any] = dict(cdk_json.get("context", {}))
    context.update(json.loads((repo_root / "cdk.context.json").read_text()))
    return context


def _text(get: ContextGetter, key: str) -> str | None:
    value = get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"context.{key}", f"must be a string, got {value!r}")
    return value.strip() or None


def _int(get: ContextGetter, key: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    value = get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInputError(f"context.{key}", f"must be an integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise InvalidInputError(f"context.{key}", f"must be an integer, got {value!r}") from None
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise InvalidInputError(f"context.{key}", f"must be {bound}, got {number}")
    return number


@dataclass(frozen=True)
class NetworkConfig:
    vpc_id: str | None = None  # an existing VPC (looked up once, cached in cdk.context.json)
    max_azs: int = 2
    nat_gateways: int = 1


@dataclass(frozen=True)
class BrokerConfig:
    node_type: str = "cache.t4g.small"
    # Not 6379: scanners probe the default port first (cdk-nag AwsSolutions-AEC5).
    port: int = 6380
    engine_version: str = "7.1"
    parameter_group_family: str = "redis7"
    # One primary + one replica in another AZ: Multi-AZ with automatic failover.
    num_cache_clusters: int = 2
    snapshot_retention_days: int = 1


@dataclass(frozen=True)
class WorkerConfig:
    queues: tuple[str, ...] = DEFAULT_QUEUES
    concurrency: int = 2
    cpu: int = worker_settings.DEFAULT_WORKER_CPU_UNITS
    memory_mib: int = worker_settings.DEFAULT_WORKER_MEMORY_MIB
    image_uri: str | None = None  # None: build worker/Dockerfile from the repository
    visibility_timeout_seconds: int = DEFAULT_VISIBILITY_TIMEOUT_SECONDS
    stop_timeout_seconds: int = WORKER_STOP_TIMEOUT_SECONDS
    scaling: ScalingParameters = field(default_factory=ScalingParameters)

    def __post_init__(self) -> None:
        validate_queue_names(list(self.queues), "context.workerQueues")
        if not 1 <= self.stop_timeout_seconds <= FARGATE_MAX_STOP_TIMEOUT_SECONDS:
            raise InvalidInputError(
                "stop_timeout_seconds",
                f"must be between 1 and {FARGATE_MAX_STOP_TIMEOUT_SECONDS} (Fargate), "
                f"got {self.stop_timeout_seconds}",
            )

    @property
    def transport_options(self) -> TransportOptions:
        """The kombu options the worker AND the monitor are given (one JSON, two readers)."""
        return TransportOptions(extra=(("visibility_timeout", self.visibility_timeout_seconds),))

    @property
    def transport_options_json(self) -> str:
        return json.dumps(self.transport_options.as_kombu_options(), sort_keys=True, separators=(",", ":"))


_SECRET_ARN = re.compile(
    r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[\w/+=.@-]+-[A-Za-z0-9]{6}$"
)
_SECURITY_GROUP = re.compile(r"^sg-[0-9a-f]{8,17}$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
DEFAULT_CA_BUNDLE = REPO_ROOT / "infra" / "certs" / "rds-global-bundle.pem"
TEST_EVENT_REGISTRY_MODES = ("create", "existing")


@dataclass(frozen=True)
class DatabaseConfig:
    """A new RDS PostgreSQL instance, or an existing database (both fields set)."""

    secret_arn: str | None = None  # existing: its RDS-format secret (complete ARN)
    security_group_id: str | None = None  # existing: a group it accepts clients from
    instance_type: str = "t4g.medium"
    port: int = 5433
    # The major version the tests run (PostgreSQL 15 here); minor upgrades are automatic.
    engine_version: str = "15.17"
    database_name: str = "beatless"
    master_username: str = "beatless"
    allocated_storage_gib: int = 20
    max_allocated_storage_gib: int = 100
    backup_retention_days: int = 7
    rotation_days: int = 30
    ca_bundle: Path | None = None  # PEM of the RDS CAs, shipped in the Lambda bundle

    def __post_init__(self) -> None:
        if (self.secret_arn is None) != (self.security_group_id is None):
            missing = "databaseSecurityGroupId" if self.secret_arn else "databaseSecretArn"
            raise InvalidInputError(
                f"context.{missing}",
                "is required with the other one: an existing database needs both its secret and "
                "a security group it accepts",
            )
        if self.ca_bundle is not None and not self.ca_bundle.is_file():
            raise InvalidInputError("context.databaseCaBundle", f"no such file: {self.ca_bundle}")

    @property
    def existing(self) -> bool:
        return self.secret_arn is not None


@dataclass(frozen=True)
class StorageConfig:
    bucket_name: str | None = None  # None: create the customer data bucket


# The graph node's API port: the node's default (`beatless.graphs.node.settings`),
# set explicitly in its environment and opened to the graph clients only.
GRAPH_NODE_PORT = 8700


@dataclass(frozen=True)
class GraphConfig:
    """The graph plane: node group size and shape, scale-out threshold, data retention."""

    instance_type: str = "r7g.large"  # memory-optimised: every open database has its own buffer pool
    min_nodes: int = 1
    max_nodes: int = 4
    data_volume_gib: int = 200
    node_capacity: int = 50  # GRAPH_NODE_CAPACITY: databases per node
    scale_out_below_slots: int = 5  # AvailableSlots below this adds a node
    backup_retention_days: int = 30  # noncurrent backup versions expire after this
    upload_expiration_days: int = 30
    staging_expiration_days: int = 7
    node_port: int = GRAPH_NODE_PORT
    # Where the kuzu_instance_monitor publishes (its METRICS_NAMESPACE) and the alarms read.
    metrics_namespace: str = graph_monitor.DEFAULT_NAMESPACE

    def __post_init__(self) -> None:
        if not _INSTANCE_TYPE.match(self.instance_type):
            raise InvalidInputError(
                "context.graphInstanceType", f"must look like r7g.large, got {self.instance_type!r}"
            )
        if self.max_nodes < self.min_nodes:
            raise InvalidInputError(
                "context.graphMaxNodes",
                f"must be at least graphMinNodes ({self.min_nodes}), got {self.max_nodes}",
            )
        if self.scale_out_below_slots > self.node_capacity:
            raise InvalidInputError(
                "context.graphScaleOutBelowSlots",
                f"must be at most graphNodeCapacity ({self.node_capacity}): one new node must lift "
                f"AvailableSlots above it, got {self.scale_out_below_slots}",
            )


@dataclass(frozen=True)
class ApiConfig:
    """The task API's HTTP API stage: requests per second and burst across all callers."""

    throttle_rate: float = 50.0
    throttle_burst: int = 100


@dataclass(frozen=True)
class LambdaSource:
    """Where the Lambda bundle is built from."""

    repo_root: Path = REPO_ROOT
    handlers_dir: Path = REPO_ROOT / "bin" / "lambda"
    uv: Path | None = None  # default: the uv next to the running Python


@dataclass(frozen=True)
class Config:
    account: str = PLACEHOLDER_ACCOUNT
    region: str = PLACEHOLDER_REGION
    prefix: str = "Beatless"
    metrics_namespace: str = metrics.DEFAULT_NAMESPACE
    alarm_email: str | None = None
    log_retention_days: int = 30
    network: NetworkConfig = field(default_factory=NetworkConfig)
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    jobs: tuple[Job, ...] = JOBS
    lambda_source: LambdaSource = field(default_factory=LambdaSource)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    test_event_registry: str = "create"
    events_dir: Path = REPO_ROOT / "events"

    def __post_init__(self) -> None:
        if self.log_retention_days not in RETENTION_DAYS:
            raise InvalidInputError(
                "context.logRetentionDays",
                f"must be one of CloudWatch Logs' values {sorted(RETENTION_DAYS)}, "
                f"got {self.log_retention_days}",
            )

    @classmethod
    def from_context(
        cls,
        get: ContextGetter,
        *,
        default_account: str | None = None,
        default_region: str | None = None,
        lambda_source: LambdaSource | None = None,
    ) -> Config:
        """Parse CDK context (`app.node.try_get_context`); raises InvalidInputError naming the key."""
        scaling = ScalingParameters(
            min_tasks=_int(get, "minWorkerTasks", 0, minimum=0),
            max_tasks=_int(get, "maxWorkerTasks", ScalingParameters.max_tasks, minimum=1),
            scale_in_idle_seconds=_int(
                get, "scaleInIdleSeconds", ScalingParameters.scale_in_idle_seconds, minimum=60
            ),
        )
        queues = _text(get, "workerQueues")
        worker = WorkerConfig(
            queues=tuple(q.strip() for q in queues.split(",")) if queues else DEFAULT_QUEUES,
            concurrency=_int(get, "workerConcurrency", WorkerConfig.concurrency, minimum=1, maximum=64),
            cpu=_int(get, "workerCpu", WorkerConfig.cpu, minimum=256),
            memory_mib=_int(get, "workerMemoryMiB", WorkerConfig.memory_mib, minimum=512),
            image_uri=_text(get, "workerImage"),
            visibility_timeout_seconds=_int(
                get, "visibilityTimeoutSeconds", DEFAULT_VISIBILITY_TIMEOUT_SECONDS, minimum=60
            ),
            scaling=scaling,
        )
        broker = BrokerConfig(
            node_type=_text(get, "brokerNodeType") or BrokerConfig.node_type,
            port=_int(get, "brokerPort", BrokerConfig.port, minimum=1024, maximum=65535),
        )
        email = _text(get, "alarmEmail")
        if email is not None and "@" not in email:
            raise InvalidInputError("context.alarmEmail", f"is not an e-mail address: {email!r}")
        vpc_id = _text(get, "vpcId")
        if vpc_id is not None and not vpc_id.startswith("vpc-"):
            raise InvalidInputError("context.vpcId", f"must look like vpc-0123abcd, got {vpc_id!r}")
        database = _database(get)
        if database.existing and vpc_id is None:
            raise InvalidInputError(
                "context.vpcId", "is required with databaseSecretArn: the Lambdas join the database's VPC"
            )
        bucket = _text(get, "storageBucketName")
        if bucket is not None and not _BUCKET_NAME.match(bucket):
            raise InvalidInputError("context.storageBucketName", f"is not an S3 bucket name: {bucket!r}")
        registry = _text(get, "testEventRegistry") or "create"
        if registry not in TEST_EVENT_REGISTRY_MODES:
            raise InvalidInputError(
                "context.testEventRegistry", f"must be one of {', '.join(TEST_EVENT_REGISTRY_MODES)}"
            )
        return cls(
            account=_text(get, "account") or default_account or PLACEHOLDER_ACCOUNT,
            region=_text(get, "region") or default_region or PLACEHOLDER_REGION,
            metrics_namespace=_text(get, "metricsNamespace") or metrics.DEFAULT_NAMESPACE,
            alarm_email=email,
            log_retention_days=_int(get, "logRetentionDays", 30, minimum=1),
            network=NetworkConfig(vpc_id=vpc_id),
            broker=broker,
            worker=worker,
            lambda_source=lambda_source or LambdaSource(),
            jobs=build_jobs(monthly_allocation=_monthly_allocation(get)),
            database=database,
            storage=StorageConfig(bucket_name=bucket),
            graph=_graph(get),
            api=ApiConfig(
                throttle_rate=float(_int(get, "apiThrottleRate", int(ApiConfig.throttle_rate), minimum=1)),
                throttle_burst=_int(get, "apiThrottleBurst", ApiConfig.throttle_burst, minimum=1),
            ),
            test_event_registry=registry,
        )

    @classmethod
    def from_mapping(cls, context: Mapping[str, Any], **kwargs: Any) -> Config:
        return cls.from_context(context.get, **kwargs)


def _monthly_allocation(get: ContextGetter) -> MonthlyTime:
    day = _int(get, "monthlyAllocationDay", MONTHLY_ALLOCATION.day, minimum=1, maximum=28)
    hour = _int(get, "monthlyAllocationHour", MONTHLY_ALLOCATION.hour, minimum=0, maximum=23)
    try:
        return MonthlyTime(day=day, hour=hour)
    except ValueError as error:
        raise InvalidInputError("context.monthlyAllocationHour", str(error)) from None


def _graph(get: ContextGetter) -> GraphConfig:
    defaults = GraphConfig()
    return GraphConfig(
        instance_type=_text(get, "graphInstanceType") or defaults.instance_type,
        min_nodes=_int(get, "graphMinNodes", defaults.min_nodes, minimum=1, maximum=100),
        max_nodes=_int(get, "graphMaxNodes", defaults.max_nodes, minimum=1, maximum=100),
        data_volume_gib=_int(get, "graphDataVolumeGiB", defaults.data_volume_gib, minimum=20, maximum=16_384),
        node_capacity=_int(get, "graphNodeCapacity", defaults.node_capacity, minimum=1, maximum=10_000),
        scale_out_below_slots=_int(
            get, "graphScaleOutBelowSlots", defaults.scale_out_below_slots, minimum=1, maximum=10_000
        ),
        backup_retention_days=_int(
            get, "graphBackupRetentionDays", defaults.backup_retention_days, minimum=1, maximum=3650
        ),
    )


def _database(get: ContextGetter) -> DatabaseConfig:
    secret_arn = _text(get, "databaseSecretArn")
    if secret_arn is not None and not _SECRET_ARN.match(secret_arn):
        raise InvalidInputError(
            "context.databaseSecretArn",
            "must be the complete ARN of a Secrets Manager secret (ending in its 6-character suffix), "
            f"got {secret_arn!r}",
        )
    group = _text(get, "databaseSecurityGroupId")
    if group is not None and not _SECURITY_GROUP.match(group):
        raise InvalidInputError(
            "context.databaseSecurityGroupId", f"must look like sg-0123abcd, got {group!r}"
        )
    instance_type = _text(get, "databaseInstanceType") or DatabaseConfig.instance_type
    if instance_type.startswith("db."):
        instance_type = instance_type[3:]
    if not _INSTANCE_TYPE.match(instance_type):
        raise InvalidInputError(
            "context.databaseInstanceType", f"must look like t4g.medium, got {instance_type!r}"
        )
    ca_text = _text(get, "databaseCaBundle")
    ca_bundle = Path(ca_text) if ca_text else (DEFAULT_CA_BUNDLE if DEFAULT_CA_BUNDLE.is_file() else None)
    if ca_bundle is not None and not ca_bundle.is_absolute():
        ca_bundle = REPO_ROOT / ca_bundle
    return DatabaseConfig(
        secret_arn=secret_arn,
        security_group_id=group,
        instance_type=instance_type,
        # RDS for PostgreSQL accepts ports 1150-65535.
        port=_int(get, "databasePort", DatabaseConfig.port, minimum=1150, maximum=65535),
        ca_bundle=ca_bundle,
    )
