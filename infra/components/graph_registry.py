"""The graph registries in DynamoDB (the contract is `beatless.graphs.registry`).

* instance registry: partition key `instance_id` (S), no index;
* graph registry: partition key `graph_id` (S), GSI `instance_id-index`
  (`beatless.graphs.registry.GRAPH_INSTANCE_INDEX`, partition key `instance_id`,
  all attributes projected: the monitor reads whole graphs by instance).

Both on demand, point-in-time recovery, encrypted with the AWS-managed key
(no key policy to keep: the nodes and the Lambdas need only DynamoDB
permissions), deletion protection, kept when the stack is deleted.

`access` is what the graph nodes and a job with `Need.GRAPH_REGISTRY` receive:
the table names for their environment and `statements()`, read and write on
the items of both tables and queries of the index, named exactly (no wildcard);
the worker's operations get `worker_statements()`, a narrower set.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from constructs import Construct

from beatless.graphs.registry import GRAPH_INSTANCE_INDEX

READ_ACTIONS = (
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DescribeTable",
)
WRITE_ACTIONS = (
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
)

# The worker's reads (`beatless.graphs.registry.Registries`): items by key, scans, queries.
WORKER_READ_ACTIONS = (
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:Scan",
)
WORKER_INDEX_ACTIONS = ("dynamodb:Query", "dynamodb:Scan")


@dataclass(frozen=True)
class GraphRegistryAccess:
    instance_table_name: str
    instance_table_arn: str
    graph_table_name: str
    graph_table_arn: str
    graph_instance_index: str = GRAPH_INSTANCE_INDEX

    @property
    def environment(self) -> dict[str, str]:
        return {
            "INSTANCE_REGISTRY_TABLE": self.instance_table_name,
            "GRAPH_REGISTRY_TABLE": self.graph_table_name,
        }

    @property
    def index_arn(self) -> str:
        return f"{self.graph_table_arn}/index/{self.graph_instance_index}"

    def size_reader_statements(self) -> list[iam.PolicyStatement]:
        """`Need.GRAPH_REGISTRY_READ`: graph sizes by key (BatchGetItem), nothing else."""
        return [iam.PolicyStatement(actions=["dynamodb:BatchGetItem"], resources=[self.graph_table_arn])]

    def worker_statements(self) -> list[iam.PolicyStatement]:
        """The worker's operations (`beatless.graphs.placement`, `beatless.graphs.operations`):
        read both tables and query the index; placement's transactions (TransactWriteItems has
        no IAM action of its own: each item needs its PutItem/UpdateItem) update both tables and
        put the graph's row. Nothing deletes a row (the monitor's cleanup does), nothing
        writes in batches, and no instance row is created (the nodes register themselves)."""
        tables = [self.instance_table_arn, self.graph_table_arn]
        return [
            iam.PolicyStatement(actions=list(WORKER_READ_ACTIONS), resources=tables),
            iam.PolicyStatement(actions=list(WORKER_INDEX_ACTIONS), resources=[self.index_arn]),
            iam.PolicyStatement(actions=["dynamodb:UpdateItem"], resources=tables),
            iam.PolicyStatement(actions=["dynamodb:PutItem"], resources=[self.graph_table_arn]),
        ]

    def statements(self) -> list[iam.PolicyStatement]:
        tables = [self.instance_table_arn, self.graph_table_arn]
        return [
            iam.PolicyStatement(actions=list(READ_ACTIONS), resources=[*tables, self.index_arn]),
            iam.PolicyStatement(actions=list(WRITE_ACTIONS), resources=tables),
        ]


def _table(scope: Construct, id: str, partition_key: str) -> dynamodb.Table:
    return dynamodb.Table(
        scope,
        id,
        partition_key=dynamodb.Attribute(name=partition_key, type=dynamodb.AttributeType.STRING),
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        encryption=dynamodb.TableEncryption.AWS_MANAGED,
        deletion_protection=True,
        removal_policy=RemovalPolicy.RETAIN,
    )


class GraphRegistry(Construct):
    def __init__(self, scope: Construct, id: str):
        super().__init__(scope, id)
        self.instances = _table(self, "InstanceRegistry", "instance_id")
        self.graphs = _table(self, "GraphRegistry", "graph_id")
        self.graphs.add_global_secondary_index(
            index_name=GRAPH_INSTANCE_INDEX,
            partition_key=dynamodb.Attribute(name="instance_id", type=dynamodb.AttributeType.STRING),
            projection_type=dynamodb.ProjectionType.ALL,
        )
        self.access = GraphRegistryAccess(
            instance_table_name=self.instances.table_name,
            instance_table_arn=self.instances.table_arn,
            graph_table_name=self.graphs.table_name,
            graph_table_arn=self.graphs.table_arn,
        )
