"""CDK context is parsed strictly: a bad value fails the synth naming its key."""

from __future__ import annotations

import pytest

from beatless.errors import InvalidInput
from infra.config import PLACEHOLDER_ACCOUNT, PLACEHOLDER_REGION, Config, committed_context


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
    ],
)
def test_bad_context_is_rejected_naming_the_key(context: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        Config.from_mapping(context)
    assert raised.value.field == field


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
