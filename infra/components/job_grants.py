"""What each `Need` of a registry job grants: IAM statements, environment, VPC placement.

`grant_for(job, resources)` applies the grant builder in `NEED_GRANTS` of each
need the job declares (in a fixed order) to an empty `Grant` that starts with
the job's own environment defaults; `ScheduledJob` turns the result into the
function's role, environment and network. `JobResources` is everything the
stacks can grant; a job receives only what its needs name, and a need the
stack does not provide (or that no builder handles yet) fails the synth with
the job's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager

from beatless import metrics
from beatless.errors import ConfigurationError
from beatless.jobs import Job, Need
from infra.components.customer_data import StorageAccess
from infra.components.database import DatabaseAccess
from infra.components.graph_registry import GraphRegistryAccess


@dataclass(frozen=True)
class BrokerAccess:
    """What `Need.BROKER` gives a job: network access to Redis and its AUTH secret."""

    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    security_group: ec2.ISecurityGroup  # the group Redis accepts
    auth_secret: secretsmanager.ISecret
    environment: Mapping[str, str]  # BROKER_URL, QUEUES, BROKER_TRANSPORT_OPTIONS


@dataclass(frozen=True)
class WorkerServiceAccess:
    """What `Need.ECS_READ` gives a job: read access to the worker service."""

    cluster_name: str
    service_name: str
    service_arn: str


@dataclass(frozen=True)
class WatchdogAccess:
    """What `Need.METRICS_READ` gives a job: the schedules it judges and their metrics."""

    watched_jobs_json: str  # WATCHED_JOBS (beatless.watchdog.parse_watched_jobs)
    schedule_arns: Sequence[str]


@dataclass(frozen=True)
class GraphApiAccess:
    """What `Need.GRAPH_API` gives a job: the network path to the graph nodes' API
    (the group their security group accepts), their API key secret and their group."""

    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    client_security_group: ec2.ISecurityGroup
    api_key_secret: secretsmanager.ISecret
    asg_name: str  # GRAPH_ASG_NAME
    asg_arn: str  # the group's ARN (its UUID part a wildcard): scale-in protection (the worker's)


@dataclass(frozen=True)
class IngestionAccess:
    """What `Need.INGESTION_READ` gives a job: the uploads and staging buckets' names and the
    graph stack's policy to list them and read batch manifests and reports."""

    uploads_bucket_name: str
    staging_bucket_name: str
    reader_policy: iam.IManagedPolicy


@dataclass(frozen=True)
class RetentionAccess:
    """What `Need.DATA_RETENTION` gives a job: the staging and backups buckets' names, the
    graph table's, and the graph stack's policy to list and delete their files and scan it."""

    staging_bucket_name: str
    backup_bucket_name: str
    graph_table_name: str
    policy: iam.IManagedPolicy


@dataclass(frozen=True)
class MonitorAccess:
    """What `Need.WAKE_MONITOR` gives a job: the worker monitor's function, to invoke."""

    function_name: str
    function_arn: str


@dataclass(frozen=True)
class JobResources:
    """Everything the stack can grant; a job receives only what its needs name."""

    broker: BrokerAccess | None = None
    metrics_namespace: str | None = None
    worker_service: WorkerServiceAccess | None = None
    database: DatabaseAccess | None = None
    storage: StorageAccess | None = None
    watchdog: WatchdogAccess | None = None
    graph_registry: GraphRegistryAccess | None = None
    graph_api: GraphApiAccess | None = None
    graph_metrics_namespace: str | None = None
    ingestion: IngestionAccess | None = None
    retention: RetentionAccess | None = None
    monitor: MonitorAccess | None = None  # set by the jobs stack once the monitor is built


@dataclass
class Grant:
    """Built up per job from its needs, then applied to the function."""

    statements: list[iam.PolicyStatement]
    environment: dict[str, str]
    vpc: ec2.IVpc | None = None
    subnets: ec2.SubnetSelection | None = None
    security_groups: list[ec2.ISecurityGroup] = field(default_factory=list)
    wildcard_reasons: list[str] = field(default_factory=list)  # for the IAM5 acknowledgement
    managed_policies: list[iam.IManagedPolicy] = field(default_factory=list)  # other stacks' grants

    def place(self, vpc: ec2.IVpc, subnets: ec2.SubnetSelection, group: ec2.ISecurityGroup) -> None:
        if self.vpc is not None and self.vpc is not vpc:
            raise ConfigurationError(
                "what a job reaches in a VPC (broker, database, graph nodes) must be in one VPC"
            )
        self.vpc, self.subnets = vpc, subnets
        self.security_groups.append(group)

    def read_secret(self, secret: secretsmanager.ISecret) -> None:
        self.statements.append(
            iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=[secret.secret_arn])
        )


_Provided = TypeVar("_Provided")


def _provided(value: _Provided | None, job: Job, need: Need) -> _Provided:
    """What the stack provides for `need`; a job needing what it does not provide fails the synth."""
    if value is None:
        raise ConfigurationError(f"job {job.name!r} needs {need.value!r}, which this stack does not provide")
    return value


def _grant_broker(job: Job, resources: JobResources, grant: Grant) -> None:
    broker = _provided(resources.broker, job, Need.BROKER)
    grant.place(broker.vpc, broker.subnets, broker.security_group)
    grant.read_secret(broker.auth_secret)
    grant.environment.update(broker.environment)
    grant.environment["BROKER_PASSWORD_SECRET_ARN"] = broker.auth_secret.secret_arn


def metrics_namespaces(resources: JobResources) -> list[str]:
    """The namespaces a job with `Need.METRICS` may write: the workers' and the jobs'."""
    assert resources.metrics_namespace is not None
    return sorted({resources.metrics_namespace, metrics.JOBS_NAMESPACE})


def _grant_metrics(job: Job, resources: JobResources, grant: Grant) -> None:
    namespace = _provided(resources.metrics_namespace, job, Need.METRICS)
    grant.statements.append(
        iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],  # PutMetricData has no resource type; the namespace condition scopes it
            conditions={"StringEquals": {"cloudwatch:namespace": metrics_namespaces(resources)}},
        )
    )
    grant.environment["METRICS_NAMESPACE"] = namespace
    grant.wildcard_reasons.append(
        "cloudwatch:PutMetricData has no resource type and is scoped by the cloudwatch:namespace "
        "condition to the two Beatless namespaces instead"
    )


def _grant_database(job: Job, resources: JobResources, grant: Grant) -> None:
    database = _provided(resources.database, job, Need.DATABASE)
    grant.place(database.vpc, database.subnets, database.client_security_group)
    grant.read_secret(database.secret)
    grant.environment.update(database.environment)


def _grant_storage_read(job: Job, resources: JobResources, grant: Grant) -> None:
    storage = _provided(resources.storage, job, Need.STORAGE_READ)
    # Listing returns every object's size: all the usage collector reads. No GetObject.
    grant.statements.append(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[storage.bucket_arn]))
    grant.environment["STORAGE_BUCKET"] = storage.bucket_name


def _grant_metrics_read(job: Job, resources: JobResources, grant: Grant) -> None:
    watchdog = _provided(resources.watchdog, job, Need.METRICS_READ)
    grant.statements.append(iam.PolicyStatement(actions=["cloudwatch:GetMetricData"], resources=["*"]))
    if watchdog.schedule_arns:
        grant.statements.append(
            iam.PolicyStatement(actions=["scheduler:GetSchedule"], resources=list(watchdog.schedule_arns))
        )
    grant.environment["WATCHED_JOBS"] = watchdog.watched_jobs_json
    grant.wildcard_reasons.append(
        "cloudwatch:GetMetricData takes no resource-level permissions (it reads any metric by query)"
    )


def _grant_ecs_read(job: Job, resources: JobResources, grant: Grant) -> None:
    service = _provided(resources.worker_service, job, Need.ECS_READ)
    grant.statements.append(
        iam.PolicyStatement(actions=["ecs:DescribeServices"], resources=[service.service_arn])
    )
    grant.environment["ECS_CLUSTER"] = service.cluster_name
    grant.environment["ECS_SERVICE"] = service.service_name


def _grant_graph_registry(job: Job, resources: JobResources, grant: Grant) -> None:
    registry = _provided(resources.graph_registry, job, Need.GRAPH_REGISTRY)
    # One grant for every job that declares the need (the monitor, the usage collector):
    # items of the two tables and the graph table's instance index, nothing else.
    grant.statements.extend(registry.statements())
    grant.environment.update(registry.environment)


def _grant_graph_registry_read(job: Job, resources: JobResources, grant: Grant) -> None:
    registry = _provided(resources.graph_registry, job, Need.GRAPH_REGISTRY_READ)
    grant.statements.extend(registry.size_reader_statements())
    grant.environment["GRAPH_REGISTRY_TABLE"] = registry.graph_table_name


def _grant_graph_api(job: Job, resources: JobResources, grant: Grant) -> None:
    api = _provided(resources.graph_api, job, Need.GRAPH_API)
    grant.place(api.vpc, api.subnets, api.client_security_group)
    grant.read_secret(api.api_key_secret)
    grant.environment["GRAPH_API_KEY_SECRET_ARN"] = api.api_key_secret.secret_arn
    grant.environment["GRAPH_ASG_NAME"] = api.asg_name


def _grant_graph_metrics(job: Job, resources: JobResources, grant: Grant) -> None:
    namespace = _provided(resources.graph_metrics_namespace, job, Need.GRAPH_METRICS)
    if Need.METRICS in job.needs:
        raise ConfigurationError(
            f"job {job.name!r} needs both {Need.METRICS.value!r} and {Need.GRAPH_METRICS.value!r}: "
            "each sets METRICS_NAMESPACE, so a job publishes to one of them"
        )
    grant.statements.append(
        iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],  # PutMetricData has no resource type; the namespace condition scopes it
            conditions={"StringEquals": {"cloudwatch:namespace": [namespace]}},
        )
    )
    grant.environment["METRICS_NAMESPACE"] = namespace
    grant.wildcard_reasons.append(
        "cloudwatch:PutMetricData has no resource type and is scoped by the cloudwatch:namespace "
        f"condition to the graph namespace ({namespace}) instead"
    )


def _grant_ec2_read(job: Job, resources: JobResources, grant: Grant) -> None:
    grant.statements.append(iam.PolicyStatement(actions=["ec2:DescribeInstances"], resources=["*"]))
    grant.wildcard_reasons.append(
        "ec2:DescribeInstances supports no resource-level permissions (it lists instances by filter)"
    )


def _grant_ingestion_read(job: Job, resources: JobResources, grant: Grant) -> None:
    ingestion = _provided(resources.ingestion, job, Need.INGESTION_READ)
    grant.managed_policies.append(ingestion.reader_policy)
    grant.environment["UPLOADS_BUCKET"] = ingestion.uploads_bucket_name
    grant.environment["STAGING_BUCKET"] = ingestion.staging_bucket_name


def _grant_data_retention(job: Job, resources: JobResources, grant: Grant) -> None:
    retention = _provided(resources.retention, job, Need.DATA_RETENTION)
    grant.managed_policies.append(retention.policy)
    grant.environment["STAGING_BUCKET"] = retention.staging_bucket_name
    grant.environment["BACKUP_BUCKET"] = retention.backup_bucket_name
    grant.environment["GRAPH_REGISTRY_TABLE"] = retention.graph_table_name


def wake_monitor(monitor: MonitorAccess, grant: Grant) -> None:
    """Invoke the worker monitor (asynchronously: `beatless.queues.wake`), and its name."""
    grant.statements.append(
        iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[monitor.function_arn])
    )
    grant.environment["MONITOR_FUNCTION_NAME"] = monitor.function_name


def _grant_wake_monitor(job: Job, resources: JobResources, grant: Grant) -> None:
    wake_monitor(_provided(resources.monitor, job, Need.WAKE_MONITOR), grant)


NEED_GRANTS: dict[Need, Callable[[Job, JobResources, Grant], None]] = {
    Need.BROKER: _grant_broker,
    Need.METRICS: _grant_metrics,
    Need.ECS_READ: _grant_ecs_read,
    Need.DATABASE: _grant_database,
    Need.STORAGE_READ: _grant_storage_read,
    Need.METRICS_READ: _grant_metrics_read,
    Need.GRAPH_REGISTRY: _grant_graph_registry,
    Need.GRAPH_REGISTRY_READ: _grant_graph_registry_read,
    Need.GRAPH_API: _grant_graph_api,
    Need.GRAPH_METRICS: _grant_graph_metrics,
    Need.EC2_READ: _grant_ec2_read,
    Need.INGESTION_READ: _grant_ingestion_read,
    Need.DATA_RETENTION: _grant_data_retention,
    Need.WAKE_MONITOR: _grant_wake_monitor,
}


def grant_for(job: Job, resources: JobResources) -> Grant:
    grant = Grant(statements=[], environment=dict(job.environment))
    for need in sorted(job.needs):
        try:
            apply = NEED_GRANTS[need]
        except KeyError:
            raise ConfigurationError(
                f"job {job.name!r} needs {need.value!r}, which NEED_GRANTS in "
                "infra/components/job_grants.py cannot grant yet"
            ) from None
        apply(job, resources, grant)
    return grant
