"""The worker stack: the Celery worker service and its queue-depth autoscaling.

The tasks join the broker's client group and, when given, the graph nodes' client group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.components.network import Network
from infra.components.queue_scaling import QueueDepthScaling
from infra.components.redis_broker import RedisBroker
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
        graph_client_security_group: ec2.ISecurityGroup | None = None,
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
            # Graph and ingestion tasks call the graph nodes' API.
            extra_security_groups=[graph_client_security_group] if graph_client_security_group else [],
            broker_url=broker.url,
            broker_password=broker.auth_token,
            metrics_namespace=metrics_namespace,
            image=worker_image(self, repo_root, config.image_uri),
            log_retention=log_retention,
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
