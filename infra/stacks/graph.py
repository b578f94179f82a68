"""The graph stack: the graph plane's data and its node group.

The registries (DynamoDB), the uploads/staging/backups buckets, the nodes' API
key, the graph clients' security group (the only group the nodes accept; the
worker tasks and the kuzu_instance_monitor Lambda join it), the node group with
its software asset, termination hook and scale-out on `AvailableSlots`, and
the graph dashboard.

It references only the network; the worker and jobs stacks reference it
(`registry.access`, `api_access`, `client_security_group`, the backups bucket's
name), never the other way round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import Stack
from constructs import Construct

from infra.components.graph_api_key import GraphApiKey
from infra.components.graph_buckets import GraphBuckets
from infra.components.graph_dashboard import GraphDashboard
from infra.components.graph_node_software import GraphNodeSoftware
from infra.components.graph_nodes import GraphNodes
from infra.components.graph_registry import GraphRegistry
from infra.components.graph_scaling import GraphNodeScaling
from infra.components.job_grants import GraphApiAccess
from infra.components.network import Network, client_security_group
from infra.config import GraphConfig


class GraphStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: GraphConfig,
        network: Network,
        repo_root: Path,
        **kwargs: Any,
    ):
        super().__init__(scope, id, **kwargs)
        self.config = config
        self.registry = GraphRegistry(self, "Registry")
        self.buckets = GraphBuckets(self, "Buckets", config=config)
        self.worker_bucket_policy = self.buckets.worker_policy()
        self.ingestion_reader_policy = self.buckets.ingestion_reader_policy()
        self.api_estimates_policy = self.buckets.api_estimates_policy()
        self.retention_policy = self.buckets.retention_policy(self.registry.access.graph_table_arn)
        self.api_key = GraphApiKey(self, "ApiKey")
        self.client_security_group = client_security_group(
            self,
            "ClientSecurityGroup",
            vpc=network.vpc,
            description="Members may call the graph nodes API (worker tasks, kuzu_instance_monitor)",
        )
        self.software = GraphNodeSoftware(self, "NodeSoftware", repo_root=repo_root)
        self.nodes = GraphNodes(
            self,
            "Nodes",
            config=config,
            vpc=network.vpc,
            subnets=network.private_subnets,
            clients=self.client_security_group,
            registry=self.registry.access,
            buckets=self.buckets,
            api_key=self.api_key.secret,
            software=self.software,
        )
        self.scaling = GraphNodeScaling(self, "Scaling", group=self.nodes.group, config=config)
        self.dashboard = GraphDashboard(
            self,
            "Dashboard",
            namespace=config.metrics_namespace,
            asg_name=self.nodes.asg_name,
            scale_out_below_slots=config.scale_out_below_slots,
        )
        self.api_access = GraphApiAccess(
            vpc=network.vpc,
            subnets=network.private_subnets,
            client_security_group=self.client_security_group,
            api_key_secret=self.api_key.secret,
            asg_name=self.nodes.asg_name,
            asg_arn=self.nodes.asg_arn,
        )
