"""What the worker's heavy operations reach (`beatless.operations.resources`):
PostgreSQL, the graph registries, the graph nodes' API and their group.

`WorkerOperationsAccess` is composed by the stacks from the data and graph
stacks' accesses; `WorkerService` turns it into the task's environment, its
task role's statements and the security groups its tasks join:

* PostgreSQL: `DATABASE_SECRET_ARN` (the ARN, never the value) and
  `DATABASE_SSLMODE=verify-full`; GetSecretValue on that secret only; the
  database's client group. No `DATABASE_SSLROOTCERT`: the worker image
  (`worker/Dockerfile`) carries no RDS CA bundle, so the worker verifies the
  server certificate against the system trust store (`WORKER_IMAGE_CA_BUNDLE`).
* The registries: `INSTANCE_REGISTRY_TABLE`, `GRAPH_REGISTRY_TABLE`;
  `GraphRegistryAccess.worker_statements()` (no delete, no batch write).
* The nodes' API: `GRAPH_API_KEY_SECRET_ARN`; GetSecretValue on that secret
  only; the graph clients' group (the only group the nodes accept).
* Scale-in protection of the nodes that hold databases:
  `autoscaling:SetInstanceProtection` on the node group only.
* `BACKUP_BUCKET`: the backups bucket's name, which the worker hands to the node
  (the node reads and writes the objects; the worker needs no S3 permission).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam

from infra.components.database import DatabaseAccess
from infra.components.graph_registry import GraphRegistryAccess
from infra.components.job_grants import GraphApiAccess

# Where an RDS CA bundle would be in the worker image: nowhere yet (worker/Dockerfile copies
# only the package and worker/). Set this when the image ships one; DATABASE_SSLROOTCERT follows.
WORKER_IMAGE_CA_BUNDLE: str | None = None


@dataclass(frozen=True)
class WorkerOperationsAccess:
    database: DatabaseAccess
    graph_registry: GraphRegistryAccess
    graph_api: GraphApiAccess
    backup_bucket_name: str  # BACKUP_BUCKET: passed to the node, which moves the bytes

    @property
    def environment(self) -> dict[str, str]:
        return {
            **self.database.client_environment(sslrootcert=WORKER_IMAGE_CA_BUNDLE),
            **self.graph_registry.environment,
            "GRAPH_API_KEY_SECRET_ARN": self.graph_api.api_key_secret.secret_arn,
            "BACKUP_BUCKET": self.backup_bucket_name,
        }

    @property
    def security_groups(self) -> Sequence[ec2.ISecurityGroup]:
        """The database's client group, then the graph nodes' (in this order)."""
        return (self.database.client_security_group, self.graph_api.client_security_group)

    @property
    def vpcs(self) -> Sequence[ec2.IVpc]:
        return (self.database.vpc, self.graph_api.vpc)

    def statements(self) -> list[iam.PolicyStatement]:
        return [
            iam.PolicyStatement(
                actions=["secretsmanager:GetSecretValue"], resources=[self.database.secret.secret_arn]
            ),
            iam.PolicyStatement(
                actions=["secretsmanager:GetSecretValue"],
                resources=[self.graph_api.api_key_secret.secret_arn],
            ),
            *self.graph_registry.worker_statements(),
            iam.PolicyStatement(
                actions=["autoscaling:SetInstanceProtection"], resources=[self.graph_api.asg_arn]
            ),
        ]
