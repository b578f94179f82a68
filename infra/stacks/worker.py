"""The worker stack: the Celery worker service, its queue-depth autoscaling and its
dashboard (here, not in the monitoring stack, as it shows the scaling alarms: the
monitoring stack refers to no other stack, and this one refers to it).

The tasks join the broker's client group and, given `operations` (composed from
the data and graph stacks' accesses), the database's and the graph nodes' client
groups, with the operations' environment and task-role grants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.components.network import Network
from infra.components.queue_scaling import QueueDepthScaling
from infra.components.redis_broker import RedisBroker
from infra.components.worker_alarms import WorkerResourceAlarms
from infra.components.worker_dashboard import WorkerDashboard
from infra.components.worker_operations import WorkerOperationsAccess
from infra.components.worker_service import WorkerService, worker_image
from infra.config import WorkerConfig


class WorkerStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: WorkerConfig,
        network: Network,
        broker: RedisBroker,
        metrics_namespace: str,
        repo_root: Path,
        log_retention: logs.RetentionDays,
        operations: WorkerOperationsAccess | None = None,
        alarm_topic: sns.ITopic | None = None,
        **kwargs: Any,
    ):
        super().__init__(scope, id, **kwargs)
        self.workers = WorkerService(
            self,
            "Workers",
            config=config,
            vpc=network.vpc,
            subnets=network.private_subnets,
            broker_security_group=broker.client_security_group,
            # The heavy operations: PostgreSQL, the graph registries, the nodes' API and group.
            operations=operations,
            broker_url=broker.url,
            broker_password=broker.auth_token,
            metrics_namespace=metrics_namespace,
            image=worker_image(self, repo_root, config.image_uri),
            log_retention=log_retention,
        )
        self.resource_alarms = (
            WorkerResourceAlarms(self, "ResourceAlarms", service=self.workers.service, topic=alarm_topic)
            if alarm_topic is not None
            else None
        )
        self.scaling = QueueDepthScaling(
            self,
            "Scaling",
            service=self.workers.service,
            cluster=self.workers.cluster,
            queues=config.queues,
            namespace=metrics_namespace,
            params=config.scaling,
        )
        self.dashboard = WorkerDashboard(
            self,
            "Dashboard",
            namespace=metrics_namespace,
            queues=config.queues,
            scale_out_alarm=self.scaling.scale_out_alarm,
            scale_in_alarm=self.scaling.scale_in_alarm,
            max_tasks=config.scaling.max_tasks,
        )
