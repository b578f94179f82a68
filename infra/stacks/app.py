"""Composes the Beatless stacks from a `Config`.

network -> broker -> data -> monitoring -> graph -> worker -> jobs -> api: each
stack only points "down" this list (monitoring refers to nothing; graph only to the
network), so there are no cycles. The worker tasks and the jobs that call the
graph nodes join the graph stack's client group; nothing in the graph stack
refers to them. The worker's operations reach the data stack's database and the
graph stack's registries, API key, node group and backups bucket (by name).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Annotations, App, Environment, Tags
from aws_cdk import aws_logs as logs

from beatless.jobs import Need
from beatless.queues.wake import MONITOR_JOB
from infra.components.job_grants import (
    BrokerAccess,
    IngestionAccess,
    JobResources,
    MonitorAccess,
    RetentionAccess,
    WorkerServiceAccess,
)
from infra.components.task_api import TaskApiAccess
from infra.components.worker_operations import WorkerOperationsAccess
from infra.config import RETENTION_DAYS, Config
from infra.stacks.api import ApiStack
from infra.stacks.broker import BrokerStack
from infra.stacks.data import DataStack
from infra.stacks.graph import GraphStack
from infra.stacks.jobs import ScheduledJobsStack
from infra.stacks.monitoring import MonitoringStack
from infra.stacks.network import NetworkStack
from infra.stacks.worker import WorkerStack


@dataclass(frozen=True)
class BeatlessStacks:
    network: NetworkStack
    broker: BrokerStack
    data: DataStack
    monitoring: MonitoringStack
    graph: GraphStack
    worker: WorkerStack
    jobs: ScheduledJobsStack
    api: ApiStack

    def all(
        self,
    ) -> tuple[
        NetworkStack,
        BrokerStack,
        DataStack,
        MonitoringStack,
        GraphStack,
        WorkerStack,
        ScheduledJobsStack,
        ApiStack,
    ]:
        return (
            self.network,
            self.broker,
            self.data,
            self.monitoring,
            self.graph,
            self.worker,
            self.jobs,
            self.api,
        )


def build(app: App, config: Config) -> BeatlessStacks:
    env = Environment(account=config.account, region=config.region)
    retention = logs.RetentionDays[RETENTION_DAYS[config.log_retention_days]]
    p = config.prefix
    network = NetworkStack(app, f"{p}Network", env=env, config=config.network, log_retention=retention)
    broker = BrokerStack(app, f"{p}Broker", env=env, config=config.broker, network=network.network)
    data = DataStack(
        app,
        f"{p}Data",
        env=env,
        database=config.database,
        storage=config.storage,
        network=network.network,
    )
    monitoring = MonitoringStack(app, f"{p}Monitoring", env=env, config=config)
    graph = GraphStack(
        app,
        f"{p}Graph",
        env=env,
        config=config.graph,
        network=network.network,
        repo_root=config.lambda_source.repo_root,
    )
    worker = WorkerStack(
        app,
        f"{p}Workers",
        env=env,
        config=config.worker,
        network=network.network,
        broker=broker.broker,
        metrics_namespace=config.metrics_namespace,
        repo_root=config.lambda_source.repo_root,
        log_retention=retention,
        operations=WorkerOperationsAccess(
            database=data.database.access,
            graph_registry=graph.registry.access,
            graph_api=graph.api_access,
            backup_bucket_name=graph.buckets.backups.bucket_name,
            uploads_bucket_name=graph.buckets.uploads.bucket_name,
            staging_bucket_name=graph.buckets.staging.bucket_name,
            bucket_policy=graph.worker_bucket_policy,
        ),
        alarm_topic=monitoring.alarms.topic,
    )
    redis = broker.broker
    broker_access = BrokerAccess(
        vpc=network.network.vpc,
        subnets=network.network.private_subnets,
        security_group=redis.client_security_group,
        auth_secret=redis.auth_token,
        environment={
            "BROKER_URL": redis.url,
            "QUEUES": ",".join(config.worker.queues),
            # The very string the worker gets, so both count the same keys.
            "BROKER_TRANSPORT_OPTIONS": worker.workers.environment["BROKER_TRANSPORT_OPTIONS"],
        },
    )
    resources = JobResources(
        broker=broker_access,
        metrics_namespace=config.metrics_namespace,
        database=data.database.access,
        storage=data.customer_data.access,
        worker_service=WorkerServiceAccess(
            cluster_name=worker.workers.cluster.cluster_name,
            service_name=worker.workers.service.service_name,
            service_arn=worker.workers.service.service_arn,
        ),
        graph_registry=graph.registry.access,
        graph_api=graph.api_access,
        graph_metrics_namespace=config.graph.metrics_namespace,
        ingestion=IngestionAccess(
            uploads_bucket_name=graph.buckets.uploads.bucket_name,
            staging_bucket_name=graph.buckets.staging.bucket_name,
            reader_policy=graph.ingestion_reader_policy,
        ),
        retention=RetentionAccess(
            staging_bucket_name=graph.buckets.staging.bucket_name,
            backup_bucket_name=graph.buckets.backups.bucket_name,
            graph_table_name=graph.registry.access.graph_table_name,
            policy=graph.retention_policy,
        ),
    )
    jobs = ScheduledJobsStack(
        app,
        f"{p}Jobs",
        env=env,
        jobs=config.jobs,
        source=config.lambda_source,
        resources=resources,
        alarm_topic=monitoring.alarms.topic,
        log_retention=retention,
        events_dir=config.events_dir,
        create_test_event_registry=config.test_event_registry == "create",
        database_ca_bundle=config.database.ca_bundle,
    )
    if any(Need.DATABASE in job.needs for job in config.jobs) and config.database.ca_bundle is None:
        Annotations.of(jobs).add_warning_v2(
            "beatless:no-rds-ca-bundle",
            "No RDS CA bundle (context databaseCaBundle, or infra/certs/rds-global-bundle.pem): "
            "the jobs verify the database certificate against the public trust store, which "
            "refuses a direct RDS instance (they never connect unverified).",
        )
    api = ApiStack(
        app,
        f"{p}Api",
        env=env,
        config=config.api,
        source=config.lambda_source,
        events_dir=config.events_dir,
        access=TaskApiAccess(
            broker=broker_access,
            database=data.database.access,
            graph_registry=graph.registry.access,
            uploads_bucket_name=graph.buckets.uploads.bucket_name,
            staging_bucket_name=graph.buckets.staging.bucket_name,
            estimates_policy=graph.api_estimates_policy,
            monitor=_monitor_access(jobs),
        ),
        alarm_topic=monitoring.alarms.topic,
        log_retention=retention,
        database_ca_bundle=config.database.ca_bundle,
    )
    api.add_stack_dependency(jobs)  # the test-event registry, when the jobs stack creates it
    stacks = BeatlessStacks(network, broker, data, monitoring, graph, worker, jobs, api)
    for stack in stacks.all():
        Tags.of(stack).add("project", "beatless")
    return stacks


def _monitor_access(jobs: ScheduledJobsStack) -> MonitorAccess | None:
    """The worker monitor the task API wakes (None when the registry has no monitor)."""
    built = jobs.jobs.get(MONITOR_JOB)
    if built is None:
        return None
    return MonitorAccess(built.function.function_name, built.function.function_arn)
