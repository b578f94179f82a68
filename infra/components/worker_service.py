"""The Celery worker service: an ECS cluster and a Fargate service running the
image built from `worker/Dockerfile` (or an image given by URI).

The container's environment is exactly what the worker reads; the broker
password reaches it only through ECS `secrets` (from Secrets Manager at task
start), never as a plain value. The stop timeout and WORKER_STOP_TIMEOUT_SECONDS
come from one constant. The task role may set and read scale-in protection
only on tasks of this cluster. Given `operations`
(`infra.components.worker_operations`), the tasks also get what the heavy
operations reach: its environment (ARNs and names only), its statements in the
task role and its security groups (the database's and the graph nodes' client
groups).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from aws_cdk import Acknowledgment, ArnFormat, CfnElement, Duration, Stack, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from beatless.errors import ConfigurationError
from infra.components.worker_operations import WorkerOperationsAccess
from infra.config import WorkerConfig

# Never sent to the image build: the build context is the repository root, and
# the worker's .dockerignore (an allow-list) is read first; these make staging
# cheap even before it exists or if it is loosened.
ASSET_EXCLUDES = (
    ".git",
    ".venv",
    "node_modules",
    "cdk.out",
    "build",
    ".beatless",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    "**/__pycache__",
    "**/*.pyc",
)

_ECR_URI = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com/(?P<repo>[^:@]+)(?::(?P<tag>[^@]+))?$"
)


@dataclass(frozen=True)
class WorkerImage:
    image: ecs.ContainerImage
    from_ecr: bool  # pulled from ECR: the execution role gets ecr:GetAuthorizationToken


def worker_image(scope: Construct, repo_root: Path, image_uri: str | None) -> WorkerImage:
    """The image from a URI (ECR images get pull permissions), else built from the repository."""
    if image_uri:
        match = _ECR_URI.match(image_uri)
        if match:
            repository = ecr.Repository.from_repository_attributes(
                scope,
                "WorkerImageRepository",
                repository_name=match["repo"],
                repository_arn=Stack.of(scope).format_arn(
                    service="ecr",
                    account=match["account"],
                    region=match["region"],
                    resource="repository",
                    resource_name=match["repo"],
                ),
            )
            return WorkerImage(
                ecs.ContainerImage.from_ecr_repository(repository, match["tag"] or "latest"), True
            )
        return WorkerImage(ecs.ContainerImage.from_registry(image_uri), False)
    # Only staged at synth (no Docker needed); `cdk deploy` builds it and pushes it to
    # the bootstrap ECR repository.
    image = ecs.ContainerImage.from_asset(
        str(repo_root),
        file="worker/Dockerfile",
        exclude=list(ASSET_EXCLUDES),
        platform=ecr_assets.Platform.LINUX_AMD64,
    )
    return WorkerImage(image, True)


class WorkerService(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: WorkerConfig,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        broker_security_group: ec2.ISecurityGroup,
        broker_url: str,
        broker_password: secretsmanager.ISecret,
        metrics_namespace: str,
        image: WorkerImage,
        log_retention: logs.RetentionDays,
        operations: WorkerOperationsAccess | None = None,
    ):
        """`operations`: what the heavy operations reach (PostgreSQL, the graph plane)."""
        super().__init__(scope, id)
        self.config = config
        self.operations = operations
        if operations is not None and any(other is not vpc for other in operations.vpcs):
            raise ConfigurationError(
                "what the worker reaches in a VPC (broker, database, graph nodes) must be in its VPC"
            )
        self.cluster = ecs.Cluster(
            self, "Cluster", vpc=vpc, container_insights_v2=ecs.ContainerInsights.ENABLED
        )
        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "TaskDefinition",
            cpu=config.cpu,
            memory_limit_mib=config.memory_mib,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        self.environment: Mapping[str, str] = {
            "BROKER_URL": broker_url,
            "WORKER_QUEUES": ",".join(config.queues),
            "BROKER_TRANSPORT_OPTIONS": config.transport_options_json,
            "WORKER_CONCURRENCY": str(config.concurrency),
            "WORKER_STOP_TIMEOUT_SECONDS": str(config.stop_timeout_seconds),
            "METRICS_NAMESPACE": metrics_namespace,
            **(operations.environment if operations is not None else {}),
        }
        self.container = self.task_definition.add_container(
            "worker",
            image=image.image,
            essential=True,
            environment=dict(self.environment),
            secrets={"BROKER_PASSWORD": ecs.Secret.from_secrets_manager(broker_password)},
            stop_timeout=Duration.seconds(config.stop_timeout_seconds),
            health_check=ecs.HealthCheck(
                command=["CMD", "python", "-m", "worker.healthcheck"],
                interval=Duration.seconds(30),
                timeout=Duration.seconds(10),
                retries=3,
                start_period=Duration.seconds(60),
            ),
            logging=ecs.LogDrivers.aws_logs(
                stream_prefix="worker",
                log_group=logs.LogGroup(self, "Logs", retention=log_retention),
            ),
        )
        self._allow_task_protection()
        extra_security_groups: Sequence[ec2.ISecurityGroup] = ()
        if operations is not None:
            # The operations' own statements, in the task role (never the execution role).
            for statement in operations.statements():
                self.task_definition.add_to_task_role_policy(statement)
            self.task_definition.task_role.add_managed_policy(operations.bucket_policy)
            extra_security_groups = operations.security_groups
        self.service = ecs.FargateService(
            self,
            "Service",
            cluster=self.cluster,
            task_definition=self.task_definition,
            vpc_subnets=subnets,
            security_groups=[broker_security_group, *extra_security_groups],
            assign_public_ip=False,
            min_healthy_percent=100,
            max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            # No desired count: Application Auto Scaling owns it (cdk.json sets
            # @aws-cdk/aws-ecs:removeDefaultDesiredCount so deploys never reset it).
        )
        self._acknowledge(image)

    def _allow_task_protection(self) -> None:
        # Scoped to this cluster's tasks: the task ID is not known before the task starts.
        tasks_of_cluster = Stack.of(self).format_arn(
            service="ecs",
            resource="task",
            resource_name=f"{self.cluster.cluster_name}/*",
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )
        self.task_definition.add_to_task_role_policy(
            iam.PolicyStatement(
                actions=["ecs:UpdateTaskProtection", "ecs:GetTaskProtection"],
                resources=[tasks_of_cluster],
            )
        )

    def _acknowledge(self, image: WorkerImage) -> None:
        stack = Stack.of(self)
        task_role_policy = self.task_definition.task_role.node.try_find_child("DefaultPolicy")
        Validations.of(task_role_policy or self.task_definition).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ecs:"
                f"{stack.region}:{stack.account}:task/"
                f"<{stack.get_logical_id(cast(CfnElement, self.cluster.node.default_child))}>/*]",
                reason=(
                    "Scale-in protection (ecs:UpdateTaskProtection/GetTaskProtection) on this cluster's "
                    "tasks only; a task's ID exists only once it runs, so the task part is a wildcard."
                ),
            ),
        )
        if self.operations is not None:
            Validations.of(task_role_policy or self.task_definition).acknowledge(
                Acknowledgment(
                    id="AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:autoscaling:"
                    f"{stack.region}:{stack.account}:autoScalingGroup:*:autoScalingGroupName/"
                    f"{self.operations.graph_api.asg_name}]",
                    reason=(
                        "autoscaling:SetInstanceProtection on the graph node group only (placement protects "
                        "a node while it holds a database); the group's ARN contains its UUID, unknown "
                        "before it exists, so that part is a wildcard and the name pins the group."
                    ),
                ),
            )
        if image.from_ecr:
            execution_policy = self.task_definition.obtain_execution_role().node.try_find_child(
                "DefaultPolicy"
            )
            Validations.of(execution_policy or self.task_definition).acknowledge(
                Acknowledgment(
                    id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
                    reason=(
                        "ecr:GetAuthorizationToken (to pull the worker image) has no resource-level "
                        "permissions; the pull actions themselves are scoped to the image's repository."
                    ),
                )
            )
        Validations.of(self.task_definition).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-ECS2",
                reason=(
                    "The plain environment holds only non-secret settings (broker endpoint without "
                    "password, queue names, kombu key layout, concurrency, stop timeout, metrics "
                    "namespace; for the operations: ARNs of the database and graph API key secrets, "
                    "never their values, table and bucket names, the TLS mode); the one secret the "
                    "container needs at start, BROKER_PASSWORD, comes from Secrets Manager via ECS secrets."
                ),
            ),
        )
