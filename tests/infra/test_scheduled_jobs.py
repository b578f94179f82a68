"""Every registry entry becomes a Lambda + schedule + DLQ + alarms, with the
registry's own numbers; grants follow the entry's needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from beatless.events import SCHEDULER_INPUT
from beatless.jobs import JOBS, Job, Need
from infra.constructs.scheduled_job import missed_run_window_seconds

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]


def _function(synth: Any, job: Job) -> dict[str, Any]:
    return synth.properties(synth.stacks.jobs.jobs[job.name].function)  # type: ignore[no-any-return]


def _ref_of(value: dict[str, Any]) -> str:
    """The logical id a {"Ref": ..} / {"Fn::GetAtt": [.., ..]} points at."""
    if "Ref" in value:
        return str(value["Ref"])
    return str(value["Fn::GetAtt"][0])


@pytest.mark.parametrize("job", JOBS, ids=lambda j: j.name)
def test_each_job_has_a_lambda_with_the_registry_limits(synth: Any, job: Job) -> None:
    function = _function(synth, job)
    assert function["Runtime"] == "python3.12"
    assert function["Handler"] == f"{job.name}.handler"
    assert function["Timeout"] == job.timeout_seconds
    assert function["MemorySize"] == job.memory_mb
    env = function["Environment"]["Variables"]
    for key, value in job.environment.items():
        assert env[key] == value


@pytest.mark.parametrize("job", JOBS, ids=lambda j: j.name)
def test_each_job_has_a_schedule_from_the_registry_with_retries_and_a_dead_letter_queue(
    synth: Any, job: Job
) -> None:
    scheduled = synth.stacks.jobs.jobs[job.name]
    schedule = synth.properties(scheduled.schedule)
    assert schedule["ScheduleExpression"] == job.schedule.expression
    assert schedule["ScheduleExpressionTimezone"] == job.schedule.timezone
    assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert schedule["State"] == "ENABLED"
    target = schedule["Target"]
    assert _ref_of(target["Arn"]) == synth.logical_id(scheduled.function)
    assert target["Input"] == SCHEDULER_INPUT
    assert target["RetryPolicy"] == {
        "MaximumRetryAttempts": job.retry.scheduler_attempts,
        "MaximumEventAgeInSeconds": job.retry.max_event_age_seconds,
    }
    dlq_id = _ref_of(target["DeadLetterConfig"]["Arn"])
    assert dlq_id == synth.logical_id(scheduled.dead_letter_queue)
    resources = synth.template(synth.stacks.jobs)["Resources"]
    assert resources[dlq_id]["Properties"]["SqsManagedSseEnabled"] is True
    policies = [
        p["Properties"]
        for p in resources.values()
        if p["Type"] == "AWS::SQS::QueuePolicy" and {"Ref": dlq_id} in p["Properties"]["Queues"]
    ]
    denies_plain_http = [
        s
        for p in policies
        for s in p["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
    ]
    assert denies_plain_http, "the dead-letter queue must refuse non-TLS requests"
    # The scheduler's role may invoke this function and write to this queue, nothing else.
    role = resources[_ref_of(target["RoleArn"])]["Properties"]
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert {(s["Action"], _ref_of(s["Resource"])) for s in statements} == {
        ("lambda:InvokeFunction", synth.logical_id(scheduled.function)),
        ("sqs:SendMessage", dlq_id),
    }


@pytest.mark.parametrize("job", JOBS, ids=lambda j: j.name)
def test_async_invoke_config_follows_the_registry(synth: Any, job: Job) -> None:
    function_id = synth.logical_id(synth.stacks.jobs.jobs[job.name].function)
    configs = [
        c
        for c in synth.resources("AWS::Lambda::EventInvokeConfig").values()
        if c["FunctionName"] == {"Ref": function_id}
    ]
    assert configs == [
        {
            "FunctionName": {"Ref": function_id},
            "MaximumEventAgeInSeconds": job.retry.max_event_age_seconds,
            "MaximumRetryAttempts": job.retry.lambda_async_retries,
            "Qualifier": "$LATEST",
        }
    ]


@pytest.mark.parametrize("job", JOBS, ids=lambda j: j.name)
def test_each_job_logs_with_retention_and_alarms_on_errors_and_missed_runs(synth: Any, job: Job) -> None:
    function = _function(synth, job)
    log_group_id = function["LoggingConfig"]["LogGroup"]["Ref"]
    log_group = synth.template(synth.stacks.jobs)["Resources"][log_group_id]["Properties"]
    assert log_group["RetentionInDays"] == synth.config.log_retention_days

    function_id = synth.logical_id(synth.stacks.jobs.jobs[job.name].function)
    topic_export = synth.logical_id(synth.stacks.monitoring.alarms.topic)
    alarms = {
        alarm["MetricName"]: alarm
        for alarm in synth.resources("AWS::CloudWatch::Alarm", synth.stacks.jobs).values()
        if alarm.get("Dimensions") == [{"Name": "FunctionName", "Value": {"Ref": function_id}}]
    }
    errors = alarms["Errors"]
    assert (errors["Namespace"], errors["Statistic"], errors["Threshold"]) == ("AWS/Lambda", "Sum", 1)
    assert errors["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert all(topic_export in str(action) for action in errors["AlarmActions"]) and errors["AlarmActions"]

    window = missed_run_window_seconds(job)
    if window is None:
        assert "Invocations" not in alarms
    else:
        missed = alarms["Invocations"]
        assert (missed["Period"], missed["Threshold"], missed["ComparisonOperator"]) == (
            window,
            1,
            "LessThanThreshold",
        )
        assert missed["TreatMissingData"] == "breaching"
        assert window >= job.period_seconds * 1.5


def _statements(synth: Any, job: Job) -> list[dict[str, Any]]:
    function = _function(synth, job)
    role = synth.template(synth.stacks.jobs)["Resources"][_ref_of(function["Role"])]["Properties"]
    assert "ManagedPolicyArns" not in role, "job roles carry only their own inline statements"
    return [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]


@pytest.mark.parametrize("job", JOBS, ids=lambda j: j.name)
def test_grants_follow_the_jobs_needs(synth: Any, job: Job) -> None:
    statements = _statements(synth, job)
    actions = {
        a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    function = _function(synth, job)

    assert ("cloudwatch:PutMetricData" in actions) == (Need.METRICS in job.needs)
    assert ("ecs:DescribeServices" in actions) == (Need.ECS_READ in job.needs)
    assert ("secretsmanager:GetSecretValue" in actions) == (Need.BROKER in job.needs)
    assert ("VpcConfig" in function) == (Need.BROKER in job.needs)

    for statement in statements:
        if statement["Action"] == "cloudwatch:PutMetricData":
            assert statement["Resource"] == "*"
            assert statement["Condition"] == {
                "StringEquals": {"cloudwatch:namespace": synth.config.metrics_namespace}
            }
        if statement["Action"] == "ecs:DescribeServices":
            service_id = synth.logical_id(synth.stacks.worker.workers.service)
            assert service_id in str(statement["Resource"])  # the worker service's ARN, exported
        if statement["Action"] == "secretsmanager:GetSecretValue":
            secret_id = synth.logical_id(synth.stacks.broker.broker.auth_token)
            assert secret_id in str(statement["Resource"])
    logs = [s for s in statements if "logs:PutLogEvents" in s["Action"]]
    assert [_ref_of(s["Resource"]) for s in logs] == [function["LoggingConfig"]["LogGroup"]["Ref"]]

    if Need.BROKER in job.needs:
        client_group = synth.logical_id(synth.stacks.broker.broker.client_security_group)
        groups = function["VpcConfig"]["SecurityGroupIds"]
        assert len(groups) == 1 and client_group in str(groups[0])


def test_registry_names_match_the_lambda_entry_points() -> None:
    stems = {p.stem for p in (REPO_ROOT / "bin" / "lambda").glob("*.py")}
    assert {job.name for job in JOBS} == stems
