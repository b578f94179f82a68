"""CDK context is parsed strictly: a bad value fails the synth naming its key."""

from __future__ import annotations

import dataclasses

import pytest

from beatless.errors import InvalidInputError
from beatless.jobs import JOBS, MonthlyTime, build_jobs
from infra.config import PLACEHOLDER_ACCOUNT, PLACEHOLDER_REGION, Config, committed_context

SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:beatless/db-AbC123"
GROUP = "sg-0123456789abcdef0"
VPC = "vpc-0abc1234def567890"


@pytest.mark.parametrize(
    ("context", "field"),
    [
        ({"maxWorkerTasks": "lots"}, "context.maxWorkerTasks"),
        ({"maxWorkerTasks": "0"}, "context.maxWorkerTasks"),
        ({"workerConcurrency": "65"}, "context.workerConcurrency"),
        ({"brokerPort": "80"}, "context.brokerPort"),
        ({"vpcId": "my-vpc"}, "context.vpcId"),
        ({"alarmEmail": "ops"}, "context.alarmEmail"),
        ({"logRetentionDays": "10"}, "context.logRetentionDays"),
        ({"workerQueues": "graph,graph"}, "context.workerQueues"),
        ({"scaleInIdleSeconds": "90"}, "scale_in_idle_seconds"),
        ({"minWorkerTasks": "5", "maxWorkerTasks": "2"}, "max_tasks"),
        ({"workerImage": 42}, "context.workerImage"),
        ({"monthlyAllocationDay": "29"}, "context.monthlyAllocationDay"),
        ({"monthlyAllocationDay": "first"}, "context.monthlyAllocationDay"),
        ({"monthlyAllocationHour": "24"}, "context.monthlyAllocationHour"),
        ({"databaseSecretArn": "beatless/db"}, "context.databaseSecretArn"),
        ({"databaseSecretArn": SECRET_ARN.removesuffix("-AbC123")}, "context.databaseSecretArn"),
        ({"databaseSecretArn": SECRET_ARN, "vpcId": VPC}, "context.databaseSecurityGroupId"),
        ({"databaseSecurityGroupId": GROUP, "vpcId": VPC}, "context.databaseSecretArn"),
        ({"databaseSecretArn": SECRET_ARN, "databaseSecurityGroupId": GROUP}, "context.vpcId"),
        ({"databaseSecurityGroupId": "default"}, "context.databaseSecurityGroupId"),
        ({"databasePort": "80"}, "context.databasePort"),
        ({"databaseInstanceType": "huge"}, "context.databaseInstanceType"),
        ({"databaseCaBundle": "/nonexistent/rds.pem"}, "context.databaseCaBundle"),
        ({"storageBucketName": "Not_A_Bucket"}, "context.storageBucketName"),
        ({"testEventRegistry": "maybe"}, "context.testEventRegistry"),
        ({"graphInstanceType": "big"}, "context.graphInstanceType"),
        ({"graphMinNodes": "0"}, "context.graphMinNodes"),
        ({"graphMinNodes": "3", "graphMaxNodes": "2"}, "context.graphMaxNodes"),
        ({"graphDataVolumeGiB": "8"}, "context.graphDataVolumeGiB"),
        ({"graphNodeCapacity": "0"}, "context.graphNodeCapacity"),
        ({"graphNodeCapacity": "10", "graphScaleOutBelowSlots": "11"}, "context.graphScaleOutBelowSlots"),
        ({"graphBackupRetentionDays": "none"}, "context.graphBackupRetentionDays"),
    ],
)
def test_bad_context_is_rejected_naming_the_key(context: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        Config.from_mapping(context)
    assert raised.value.field == field


def test_monthly_allocation_time_moves_both_monthly_allocations_and_nothing_else() -> None:
    moved = Config.from_mapping({"monthlyAllocationDay": "5", "monthlyAllocationHour": "7"})
    assert moved.jobs == build_jobs(monthly_allocation=MonthlyTime(5, 7))
    assert Config.from_mapping({}).jobs == build_jobs() == JOBS
    for a, b in zip(moved.jobs, JOBS, strict=True):
        # Only a schedule or a schedule passed in the environment follows the allocation time.
        assert dataclasses.replace(a, schedule=b.schedule, environment=b.environment) == b, a.name


def test_an_existing_database_and_bucket_from_context() -> None:
    config = Config.from_mapping(
        {
            "vpcId": VPC,
            "databaseSecretArn": SECRET_ARN,
            "databaseSecurityGroupId": GROUP,
            "databaseInstanceType": "db.r7g.large",
            "storageBucketName": "acme-data",
            "testEventRegistry": "existing",
        }
    )
    assert config.database.existing
    assert (config.database.secret_arn, config.database.security_group_id) == (SECRET_ARN, GROUP)
    assert config.database.instance_type == "r7g.large"
    assert config.storage.bucket_name == "acme-data"
    assert config.test_event_registry == "existing"
    default = Config.from_mapping({})
    assert not default.database.existing and default.storage.bucket_name is None
    assert default.test_event_registry == "create"
    assert default.database.port != 5432


def test_context_values_given_as_text_on_the_command_line_are_parsed() -> None:
    config = Config.from_mapping(
        {
            "maxWorkerTasks": "25",
            "scaleInIdleSeconds": "600",
            "workerQueues": "graph, default",
            "account": "210987654321",
        }
    )
    assert config.worker.scaling.max_tasks == 25
    assert config.worker.scaling.scale_in_evaluation_periods == 10
    assert config.worker.queues == ("graph", "default")
    assert config.account == "210987654321"


def test_account_falls_back_to_the_cli_environment_then_to_the_committed_placeholder() -> None:
    assert (
        Config.from_mapping({}, default_account="111122223333", default_region="eu-west-1").region
        == "eu-west-1"
    )
    config = Config.from_mapping({})
    assert (config.account, config.region) == (PLACEHOLDER_ACCOUNT, PLACEHOLDER_REGION)
    # The placeholder's AZ lookup is committed, so synth without credentials never calls AWS.
    key = f"availability-zones:account={PLACEHOLDER_ACCOUNT}:region={PLACEHOLDER_REGION}"
    assert len(committed_context()[key]) >= 2
    assert committed_context()["@aws-cdk/aws-ecs:removeDefaultDesiredCount"] is True


def test_graph_plane_defaults_and_context() -> None:
    from beatless.graphs import monitor
    from beatless.graphs.node.settings import NodeSettings
    from infra.config import GRAPH_NODE_PORT

    default = Config.from_mapping({}).graph
    assert default.instance_type == "r7g.large" and (default.min_nodes, default.max_nodes) == (1, 4)
    assert default.scale_out_below_slots <= default.node_capacity
    assert default.metrics_namespace == monitor.DEFAULT_NAMESPACE
    # The port infra opens is the node's own default.
    node = NodeSettings.from_env({"GRAPH_DATA_DIR": "/data", "GRAPH_API_KEY": "k" * 16})
    assert default.node_port == GRAPH_NODE_PORT == node.port
    given = Config.from_mapping(
        {"graphInstanceType": "m7i.xlarge", "graphMaxNodes": "9", "graphScaleOutBelowSlots": "20"}
    ).graph
    assert (given.instance_type, given.max_nodes, given.scale_out_below_slots) == ("m7i.xlarge", 9, 20)
