"""Typed, validated configuration of the Beatless CDK app.

`infra/app.py` is the only code that reads CDK context and the environment; it
hands a getter to `Config.from_context`, which parses every value (context
given on the command line arrives as text) and names the context key of a bad
one. Stacks and constructs receive these frozen objects, nothing else.

Context keys (all optional): account, region, vpcId, workerImage, alarmEmail,
metricsNamespace, workerQueues, workerConcurrency, workerCpu, workerMemoryMiB,
minWorkerTasks, maxWorkerTasks, scaleInIdleSeconds, visibilityTimeoutSeconds,
brokerNodeType, brokerPort, logRetentionDays.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beatless import metrics, worker_settings
from beatless.broker import TransportOptions, validate_queue_names
from beatless.errors import InvalidInput
from beatless.jobs import JOBS, Job
from beatless.scaling import ScalingParameters

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
        raise InvalidInput(f"context.{key}", f"must be a string, got {value!r}")
    return value.strip() or None


def _int(get: ContextGetter, key: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    value = get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput(f"context.{key}", f"must be an integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(f"context.{key}", f"must be an integer, got {value!r}") from None
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise InvalidInput(f"context.{key}", f"must be {bound}, got {number}")
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
    cpu: int = 1024
    memory_mib: int = 2048
    image_uri: str | None = None  # None: build worker/Dockerfile from the repository
    visibility_timeout_seconds: int = DEFAULT_VISIBILITY_TIMEOUT_SECONDS
    stop_timeout_seconds: int = WORKER_STOP_TIMEOUT_SECONDS
    scaling: ScalingParameters = field(default_factory=ScalingParameters)

    def __post_init__(self) -> None:
        validate_queue_names(list(self.queues), "context.workerQueues")
        if not 1 <= self.stop_timeout_seconds <= FARGATE_MAX_STOP_TIMEOUT_SECONDS:
            raise InvalidInput(
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

    def __post_init__(self) -> None:
        if self.log_retention_days not in RETENTION_DAYS:
            raise InvalidInput(
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
        """Parse CDK context (`app.node.try_get_context`); raises InvalidInput naming the key."""
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
            raise InvalidInput("context.alarmEmail", f"is not an e-mail address: {email!r}")
        vpc_id = _text(get, "vpcId")
        if vpc_id is not None and not vpc_id.startswith("vpc-"):
            raise InvalidInput("context.vpcId", f"must look like vpc-0123abcd, got {vpc_id!r}")
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
        )

    @classmethod
    def from_mapping(cls, context: Mapping[str, Any], **kwargs: Any) -> Config:
        return cls.from_context(context.get, **kwargs)
