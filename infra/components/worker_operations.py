"""What the worker's heavy operations reach (`beatless.operations.resources`):
PostgreSQL, the graph registries, the graph nodes' API and their group.

`WorkerOperationsAccess` is composed by the stacks from the data and graph
stacks' accesses; `WorkerService` turns it into the task's environment, its
task role's statements and the security groups its tasks join:

* PostgreSQL: `DATABASE_SECRET_ARN` (the ARN, never the value) and
  `DATABASE_SSLMODE=verify-full`; GetSecretValue on that secret only; the
  database's client group; `DATABASE_SSLROOTCERT` is the RDS CA bundle that
  `worker/Dockerfile` copies into the image (`WORKER_IMAGE_CA_BUNDLE`).
* The registries: `INSTANCE_REGISTRY_TABLE`, `GRAPH_REGISTRY_TABLE`;
  `GraphRegistryAccess.worker_statements()` (no delete, no batch write).
* The nodes' API: `GRAPH_API_KEY_SECRET_ARN`; GetSecretValue on that secret
  only; the graph clients' group (the only group the nodes accept).
* Scale-in protection of the nodes that hold databases:
  `autoscaling:SetInstanceProtection` on the node group only.
* `BACKUP_BUCKET`: the backups bucket's name, which the worker hands to the node
  (the node reads and writes the objects; the worker needs no permission on it).
* Ingestion and subgraphs: `UPLOADS_BUCKET` (the worker reads uploaded files) and
  `STAGING_BUCKET` (it writes validated batches and their manifests, reads them and the
  node's exports back, and deletes what it fetched), through the graph stack's managed
  policy (`bucket_policy`), attached to the task role; the node reads and writes staging.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam

from infra.components.database import DatabaseAccess
from infra.components.graph_registry import GraphRegistryAccess
from infra.components.job_grants import GraphApiAccess

# Where worker/Dockerfile puts the RDS CA bundle (infra/certs/rds-global-bundle.pem): the worker
# verifies the database's certificate against it (a test keeps the two paths equal).
WORKER_IMAGE_CA_BUNDLE: str | None = "/app/certs/rds-global-bundle.pem"


@dataclass(frozen=True)
class WorkerOperationsAccess:
    database: DatabaseAccess
    graph_registry: GraphRegistryAccess
    graph_api: GraphApiAccess
    backup_bucket_name: str  # BACKUP_BUCKET: passed to the node, which moves the bytes
    uploads_bucket_name: str  # UPLOADS_BUCKET: read
    staging_bucket_name: str  # STAGING_BUCKET: read, written, cleaned
    bucket_policy: iam.IManagedPolicy  # the graph stack's policy for those two (GraphBuckets.worker_policy)

    @property
    def environment(self) -> dict[str, str]:
        return {
            **self.database.client_environment(sslrootcert=WORKER_IMAGE_CA_BUNDLE),
            **self.graph_registry.environment,
            "GRAPH_API_KEY_SECRET_ARN": self.graph_api.api_key_secret.secret_arn,
            "BACKUP_BUCKET": self.backup_bucket_name,
            "UPLOADS_BUCKET": self.uploads_bucket_name,
            "STAGING_BUCKET": self.staging_bucket_name,
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
