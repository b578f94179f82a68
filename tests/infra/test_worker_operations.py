"""The worker's heavy operations (`beatless.operations.resources`) in AWS: the
task definition's environment points at the deployed database secret (and the
RDS CA bundle the image carries), graph registries, graph API key and the
backups, uploads and staging buckets; the task role holds exactly the grants
they need and nothing more; the tasks reach PostgreSQL and the graph nodes; the
stacks still refer only "down" (no cycles)."""

from __future__ import annotations

import json
import re
from typing import Any

import aws_cdk as cdk
import pytest

from beatless.db.settings import DatabaseSettings
from beatless.graphs.client import api_key_from_env
from beatless.graphs.registry import GRAPH_INSTANCE_INDEX
from beatless.operations.resources import OperationResources
from infra.components.worker_operations import WORKER_IMAGE_CA_BUNDLE
from tests.infra.conftest import EXISTING_DATABASE_GROUP, EXISTING_DATABASE_SECRET

pytestmark = pytest.mark.slow

OPERATIONS_ENVIRONMENT = {
    "DATABASE_SECRET_ARN",
    "DATABASE_SSLMODE",
    "INSTANCE_REGISTRY_TABLE",
    "GRAPH_REGISTRY_TABLE",
    "GRAPH_API_KEY_SECRET_ARN",
    "BACKUP_BUCKET",
    "UPLOADS_BUCKET",
    "STAGING_BUCKET",
    "DATABASE_SSLROOTCERT",
}


@pytest.fixture(params=["synth", "synth_variant"])
def app(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


def _spelled(construct: Any, value: str) -> Any:
    """`value` (an attribute of `construct`) as the template of `construct`'s own stack writes it."""
    return cdk.Stack.of(construct).resolve(value)


def _exported(synth: Any, value: Any) -> Any:
    """`value` with every cross-stack import replaced by what the exporting stack outputs,
    so a worker value can be compared with the resource it names in its own stack."""
    if isinstance(value, dict) and set(value) == {"Fn::ImportValue"}:
        name = value["Fn::ImportValue"]
        for template in synth.templates.values():
            for output in template.get("Outputs", {}).values():
                if output.get("Export", {}).get("Name") == name:
                    return output["Value"]
        raise AssertionError(f"no stack exports {name}")
    if isinstance(value, dict):
        return {key: _exported(synth, item) for key, item in value.items()}
    if isinstance(value, list):
        return [_exported(synth, item) for item in value]
    return value


def _database_secret_arn(synth: Any) -> Any:
    database = synth.stacks.data.database
    if database.instance is None:
        return EXISTING_DATABASE_SECRET
    secret = database.instance.secret
    return _spelled(secret, secret.secret_arn)


def _database_clients(synth: Any) -> Any:
    database = synth.stacks.data.database
    if database.instance is None:
        return EXISTING_DATABASE_GROUP
    group = database.access.client_security_group
    return _spelled(group, group.security_group_id)


def _task_role_statements(synth: Any) -> list[dict[str, Any]]:
    task_definition = synth.only("AWS::ECS::TaskDefinition")
    role_id = task_definition["TaskRoleArn"]["Fn::GetAtt"][0]
    role = synth.template(synth.stacks.worker)["Resources"][role_id]["Properties"]
    # The default policy, and the one managed policy of the graph stack for its buckets (checked below).
    assert "Policies" not in role and len(role.get("ManagedPolicyArns", [])) == 1
    policies = [
        p for p in synth.resources("AWS::IAM::Policy").values() if {"Ref": role_id} in p.get("Roles", [])
    ]
    assert len(policies) == 1
    statements: list[dict[str, Any]] = policies[0]["PolicyDocument"]["Statement"]
    assert all(s["Effect"] == "Allow" and "Condition" not in s for s in statements)
    return statements


def _normalized(synth: Any, statement: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
    resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
    return (
        tuple(sorted(actions)),
        tuple(sorted(json.dumps(_exported(synth, r), sort_keys=True) for r in resources)),
    )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _expected(actions: list[str], resources: list[Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(sorted(actions)), tuple(sorted(json.dumps(r, sort_keys=True) for r in resources))


def test_the_worker_environment_points_the_operations_at_the_deployed_resources(app: Any) -> None:
    env = app.container_environment()
    assert set(env) >= OPERATIONS_ENVIRONMENT
    graph = app.stacks.graph
    instances, graphs = graph.registry.instances, graph.registry.graphs
    backups, api_key = graph.buckets.backups, graph.api_key.secret
    assert _exported(app, env["DATABASE_SECRET_ARN"]) == _database_secret_arn(app)
    assert env["DATABASE_SSLMODE"] == "verify-full"
    # The RDS CA bundle the worker image carries (worker/Dockerfile copies it there).
    assert env["DATABASE_SSLROOTCERT"] == WORKER_IMAGE_CA_BUNDLE
    assert _exported(app, env["INSTANCE_REGISTRY_TABLE"]) == _spelled(instances, instances.table_name)
    assert _exported(app, env["GRAPH_REGISTRY_TABLE"]) == _spelled(graphs, graphs.table_name)
    assert _exported(app, env["GRAPH_API_KEY_SECRET_ARN"]) == _spelled(api_key, api_key.secret_arn)
    assert _exported(app, env["BACKUP_BUCKET"]) == _spelled(backups, backups.bucket_name)
    uploads, staging = graph.buckets.uploads, graph.buckets.staging
    assert _exported(app, env["UPLOADS_BUCKET"]) == _spelled(uploads, uploads.bucket_name)
    assert _exported(app, env["STAGING_BUCKET"]) == _spelled(staging, staging.bucket_name)
    # The ARNs are references (to be fetched by the worker), never a secret's value.
    for name in ("DATABASE_SECRET_ARN", "GRAPH_API_KEY_SECRET_ARN"):
        assert "resolve:secretsmanager" not in json.dumps(env[name])
    (container,) = app.only("AWS::ECS::TaskDefinition")["ContainerDefinitions"]
    assert [s["Name"] for s in container["Secrets"]] == ["BROKER_PASSWORD"]


def test_the_operations_settings_accept_the_deployed_environment(app: Any) -> None:
    """The real readers of the operations' environment, on what the template gives them."""
    env = {name: app.render(value) for name, value in app.container_environment().items()}
    env["DATABASE_SECRET_ARN"] = EXISTING_DATABASE_SECRET  # a rendered reference is no ARN
    database = DatabaseSettings.from_env(env)
    assert (database.sslmode, database.sslrootcert) == ("verify-full", WORKER_IMAGE_CA_BUNDLE)
    resources = OperationResources(env)
    assert resources.backup_bucket() == env["BACKUP_BUCKET"]
    assert resources.uploads_bucket() == env["UPLOADS_BUCKET"]
    assert resources.staging_bucket() == env["STAGING_BUCKET"]

    class SecretsManager:
        def get_secret_value(self, *, SecretId: str) -> dict[str, str]:  # boto3's keyword
            assert SecretId == env["GRAPH_API_KEY_SECRET_ARN"]
            return {"SecretString": "the-key"}

    assert api_key_from_env(env, SecretsManager) == "the-key"


def test_the_worker_task_role_has_exactly_the_operations_grants(app: Any) -> None:
    graph = app.stacks.graph
    instances, graphs = graph.registry.instances, graph.registry.graphs
    instance_arn = _spelled(instances, instances.table_arn)
    graph_arn = _spelled(graphs, graphs.table_arn)
    index_arn = {"Fn::Join": ["", [graph_arn, f"/index/{GRAPH_INSTANCE_INDEX}"]]}
    api_key = graph.api_key.secret
    cluster = app.logical_id(app.stacks.worker.workers.cluster)
    tasks_of_cluster = {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                f":ecs:{app.config.region}:{app.config.account}:task/",
                {"Ref": cluster},
                "/*",
            ],
        ]
    }
    node_group = {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                f":autoscaling:{app.config.region}:{app.config.account}:autoScalingGroup:*:"
                f"autoScalingGroupName/{graph.nodes.asg_name}",
            ],
        ]
    }
    expected = [
        # The worker's own scale-in protection (its tasks).
        _expected(["ecs:UpdateTaskProtection", "ecs:GetTaskProtection"], [tasks_of_cluster]),
        # PostgreSQL: its secret only.
        _expected(["secretsmanager:GetSecretValue"], [_database_secret_arn(app)]),
        # The graph nodes' API key: its secret only.
        _expected(["secretsmanager:GetSecretValue"], [_spelled(api_key, api_key.secret_arn)]),
        # The registries: reads of both tables and the index; placement's transactions
        # (per item: UpdateItem on both tables, PutItem of the graph's row); no delete.
        _expected(
            ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:Scan"],
            [instance_arn, graph_arn],
        ),
        _expected(["dynamodb:Query", "dynamodb:Scan"], [index_arn]),
        _expected(["dynamodb:UpdateItem"], [instance_arn, graph_arn]),
        _expected(["dynamodb:PutItem"], [graph_arn]),
        # Scale-in protection of the graph nodes: their group only.
        _expected(["autoscaling:SetInstanceProtection"], [node_group]),
    ]
    statements = _task_role_statements(app)
    assert sorted(_normalized(app, s) for s in statements) == sorted(expected)
    # Its buckets' objects through one policy of the graph stack: uploads read, staging read,
    # written and cleaned; nothing of the backups (the node moves their bytes).
    task_definition = app.only("AWS::ECS::TaskDefinition")
    task_role = app.template(app.stacks.worker)["Resources"][task_definition["TaskRoleArn"]["Fn::GetAtt"][0]]
    task_role = task_role["Properties"]
    (attached,) = [_exported(app, arn) for arn in task_role["ManagedPolicyArns"]]
    policy = graph.worker_bucket_policy
    assert attached == _spelled(policy, policy.managed_policy_arn)
    document = app.properties(policy)["PolicyDocument"]
    objects = {
        name: {"Fn::Join": ["", [{"Fn::GetAtt": [app.logical_id(bucket), "Arn"]}, "/*"]]}
        for name, bucket in graph.buckets.buckets.items()
    }
    assert sorted(
        (tuple(sorted(_list(s["Action"]))), json.dumps(s["Resource"], sort_keys=True))
        for s in document["Statement"]
    ) == sorted(
        [
            (("s3:GetObject",), json.dumps(objects["uploads"], sort_keys=True)),
            (
                tuple(sorted(["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"])),
                json.dumps(objects["staging"], sort_keys=True),
            ),
        ]
    )
    assert not [s for s in statements if "s3:" in json.dumps(s["Action"])]
    # The group the statement names is the deployed group.
    (group,) = app.resources("AWS::AutoScaling::AutoScalingGroup", graph).values()
    assert group["AutoScalingGroupName"] == graph.nodes.asg_name


def test_the_operations_secrets_are_not_given_to_the_execution_role(app: Any) -> None:
    """ECS start-up reads only the broker password; the worker fetches the others itself."""
    task_definition = app.only("AWS::ECS::TaskDefinition")
    role_id = task_definition["ExecutionRoleArn"]["Fn::GetAtt"][0]
    policies = [
        p for p in app.resources("AWS::IAM::Policy").values() if {"Ref": role_id} in p.get("Roles", [])
    ]
    secrets = [
        s
        for p in policies
        for s in p["PolicyDocument"]["Statement"]
        if "secretsmanager:GetSecretValue" in json.dumps(s["Action"])
    ]
    broker_secret = app.stacks.broker.broker.auth_token
    assert [_exported(app, s["Resource"]) for s in secrets] == [
        _spelled(broker_secret, broker_secret.secret_arn)
    ]


def test_the_worker_tasks_reach_the_broker_the_database_and_the_graph_nodes(app: Any) -> None:
    network = app.properties(app.stacks.worker.workers.service)["NetworkConfiguration"]
    groups = [_exported(app, group) for group in network["AwsvpcConfiguration"]["SecurityGroups"]]
    broker = app.stacks.broker.broker.client_security_group
    graph_clients = app.stacks.graph.client_security_group
    assert groups == [
        _spelled(broker, broker.security_group_id),
        _database_clients(app),
        _spelled(graph_clients, graph_clients.security_group_id),
    ]
    database = app.stacks.data.database
    if database.security_group is not None:
        # A new database accepts its client group on its port only.
        rules = _ingress(app, app.stacks.data, database.security_group, _database_clients(app))
        assert rules == [(app.config.database.port,) * 2]
    # The graph nodes accept the graph clients on the node port (8700).
    graph_rules = _ingress(
        app,
        app.stacks.graph,
        app.stacks.graph.nodes.security_group,
        _spelled(graph_clients, graph_clients.security_group_id),
    )
    assert graph_rules == [(app.config.graph.node_port,) * 2] == [(8700, 8700)]


def _ingress(synth: Any, stack: cdk.Stack, group: Any, source: Any) -> list[tuple[int, int]]:
    """(from, to) ports of `group`'s ingress rules (separate resources) from `source`."""
    return [
        (rule["FromPort"], rule["ToPort"])
        for rule in synth.resources("AWS::EC2::SecurityGroupIngress", stack).values()
        if rule["GroupId"] == _spelled(group, group.security_group_id)
        and rule["SourceSecurityGroupId"] == source
    ]


def test_the_stacks_still_refer_only_down(app: Any) -> None:
    """The worker imports from the network, broker, data, monitoring (its alarms' topic) and graph
    stacks; none of them imports from the worker (the jobs stack does, as before): no cycle."""
    stacks = app.stacks

    def imports(stack: cdk.Stack) -> set[str]:
        text = json.dumps(app.template(stack))
        return set(re.findall(r'"Fn::ImportValue": "([A-Za-z]+):', text))

    assert imports(stacks.worker) <= {
        stacks.network.stack_name,
        stacks.broker.stack_name,
        stacks.data.stack_name,
        stacks.monitoring.stack_name,
        stacks.graph.stack_name,
    }
    assert stacks.graph.stack_name in imports(stacks.worker)
    for stack in (stacks.network, stacks.broker, stacks.data, stacks.monitoring, stacks.graph):
        assert stacks.worker.stack_name not in imports(stack), stack.stack_name


def test_the_worker_image_carries_the_ca_bundle_the_environment_names() -> None:
    """worker/Dockerfile copies infra/certs' RDS bundle to WORKER_IMAGE_CA_BUNDLE (and the
    build context lets it in), so the worker verifies the database's certificate."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    dockerfile = (repo / "worker" / "Dockerfile").read_text()
    assert f"COPY infra/certs/rds-global-bundle.pem {WORKER_IMAGE_CA_BUNDLE}" in dockerfile
    assert "!infra/certs/rds-global-bundle.pem" in (repo / ".dockerignore").read_text().splitlines()
    assert "BEGIN CERTIFICATE" in (repo / "infra" / "certs" / "rds-global-bundle.pem").read_text()
