"""Every registry entry becomes a Lambda + schedule + DLQ + alarms, with the
registry's own numbers; grants follow the entry's needs; the schema migration
runs before the database jobs exist; every job has a missed-run alarm.

Each test runs on both apps: `synth` (the committed context, the registry as
it is) and `synth_variant` (existing VPC/database/bucket, the monthly time
moved, plus scaffolding jobs for the needs and windows no registry job has yet).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns

from beatless import metrics
from beatless.errors import ConfigurationError
from beatless.events import SCHEDULER_INPUT
from beatless.jobs import (
    API_FUNCTIONS,
    DAY,
    DEPLOY_FUNCTIONS,
    HOUR,
    JOBS,
    MINUTE,
    Job,
    MonthlyTime,
    Need,
    build_jobs,
)
from beatless.jobs.schedules import Rate, Schedule, missed_run_window_seconds, needs_watchdog, parse_schedule
from beatless.watchdog import parse_watched_jobs
from infra.components.job_grants import JobResources
from infra.components.scheduled_job import (
    ScheduledJob,
    direct_alarm_plan,
    overdue_alarm_period_seconds,
    pascal,
    schedule_input,
)
from infra.components.schema_migration import migrations_hash
from tests.infra.conftest import (
    EXISTING_BUCKET,
    EXISTING_DATABASE_GROUP,
    EXISTING_DATABASE_SECRET,
    SCAFFOLD_JOBS,
    VARIANT_MONTHLY,
)

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
VARIANT_JOBS = (
    *build_jobs(
        monthly_allocation=MonthlyTime(
            int(VARIANT_MONTHLY["monthlyAllocationDay"]), int(VARIANT_MONTHLY["monthlyAllocationHour"])
        )
    ),
    *SCAFFOLD_JOBS,
)
CASES = [("synth", job) for job in JOBS] + [("synth_variant", job) for job in VARIANT_JOBS]


def _ids(case: tuple[str, Job]) -> str:
    return f"{case[0].removeprefix('synth').lstrip('_') or 'main'}-{case[1].name}"


@pytest.fixture(params=CASES, ids=_ids)
def case(request: pytest.FixtureRequest) -> tuple[Any, Job]:
    app, job = request.param
    return request.getfixturevalue(app), job


def _function(synth: Any, job: Job) -> dict[str, Any]:
    return synth.properties(synth.stacks.jobs.jobs[job.name].function)  # type: ignore[no-any-return]


def _ref_of(value: dict[str, Any]) -> str:
    """The logical id a {"Ref": ..} / {"Fn::GetAtt": [.., ..]} points at."""
    if "Ref" in value:
        return str(value["Ref"])
    return str(value["Fn::GetAtt"][0])


def test_the_apps_build_exactly_the_registry(synth: Any, synth_variant: Any) -> None:
    assert synth.config.jobs == JOBS
    assert synth_variant.config.jobs == VARIANT_JOBS
    assert set(synth_variant.stacks.jobs.jobs) == {job.name for job in VARIANT_JOBS}


def test_each_job_has_a_lambda_with_the_registry_limits(case: tuple[Any, Job]) -> None:
    synth, job = case
    function = _function(synth, job)
    assert function["Runtime"] == "python3.12"
    assert function["Handler"] == f"{job.name}.handler"
    assert function["Timeout"] == job.timeout_seconds
    assert function["MemorySize"] == job.memory_mb
    env = function["Environment"]["Variables"]
    for key, value in job.environment.items():
        assert env[key] == value


def test_each_job_has_its_schedules_from_the_registry_with_retries_and_a_dead_letter_queue(
    case: tuple[Any, Job],
) -> None:
    synth, job = case
    scheduled = synth.stacks.jobs.jobs[job.name]
    assert len(scheduled.schedules) == len(job.schedules)
    assert scheduled.schedule is scheduled.schedules[0]
    dlq_id = synth.logical_id(scheduled.dead_letter_queue)
    role_ids = set()
    for built, declared in zip(scheduled.schedules, job.schedules, strict=True):
        schedule = synth.properties(built)
        assert schedule["ScheduleExpression"] == declared.expression
        assert schedule["ScheduleExpressionTimezone"] == declared.timezone
        assert schedule["FlexibleTimeWindow"] == {"Mode": "OFF"}
        assert schedule["State"] == "ENABLED"
        target = schedule["Target"]
        assert _ref_of(target["Arn"]) == synth.logical_id(scheduled.function)
        # The Scheduler's own fields, plus the schedule's keys (e.g. the monitor's action).
        assert json.loads(target["Input"]) == {**json.loads(SCHEDULER_INPUT), **declared.input}
        if not declared.input:
            assert target["Input"] == SCHEDULER_INPUT
        assert target["RetryPolicy"] == {
            "MaximumRetryAttempts": job.retry.scheduler_attempts,
            "MaximumEventAgeInSeconds": job.retry.max_event_age_seconds,
        }
        assert _ref_of(target["DeadLetterConfig"]["Arn"]) == dlq_id
        role_ids.add(_ref_of(target["RoleArn"]))
    assert len(role_ids) == 1  # one scheduler role per job
    target = synth.properties(scheduled.schedule)["Target"]
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


def test_a_jobs_first_schedule_keeps_its_construct_id_and_further_ones_are_named_by_label(
    synth: Any,
) -> None:
    """Existing jobs' logical ids never move when a job gains schedules."""
    for name, built in synth.stacks.jobs.jobs.items():
        ids = [schedule.node.id for schedule in built.schedules]
        labels = [s.label for s in built.job.more_schedules]
        assert ids == ["Schedule", *(f"Schedule{pascal(label)}" for label in labels)], name


def test_schedule_input_merges_the_schedules_keys_into_the_scheduler_fields() -> None:
    assert schedule_input(Schedule("rate(1 hour)")) == SCHEDULER_INPUT
    merged = json.loads(
        schedule_input(Schedule("rate(1 hour)", label="health", input={"action": "health_check"}))
    )
    assert merged == {**json.loads(SCHEDULER_INPUT), "action": "health_check"}


def test_each_event_rule_invokes_its_job_with_the_raw_event_and_the_jobs_retries(
    case: tuple[Any, Job],
) -> None:
    synth, job = case
    built = synth.stacks.jobs.jobs[job.name]
    assert len(built.rules) == len(job.event_rules)
    resources = synth.template(synth.stacks.jobs)["Resources"]
    function_id = synth.logical_id(built.function)
    for rule, declared in zip(built.rules, job.event_rules, strict=True):
        properties = synth.properties(rule)
        assert properties["EventPattern"] == {
            "source": [declared.source],
            "detail-type": [declared.detail_type],
        }
        assert properties["State"] == "ENABLED"
        (target,) = properties["Targets"]
        assert _ref_of(target["Arn"]) == function_id
        # As it is: no Input, InputPath or InputTransformer (the entry point translates the event).
        assert not {"Input", "InputPath", "InputTransformer"} & set(target)
        assert target["RetryPolicy"] == {
            "MaximumRetryAttempts": job.retry.scheduler_attempts,
            "MaximumEventAgeInSeconds": job.retry.max_event_age_seconds,
        }
        assert _ref_of(target["DeadLetterConfig"]["Arn"]) == synth.logical_id(built.dead_letter_queue)
        rule_id = synth.logical_id(rule)
        permissions = [
            r["Properties"]
            for r in resources.values()
            if r["Type"] == "AWS::Lambda::Permission"
            and _ref_of(r["Properties"]["FunctionName"]) == function_id
        ]
        assert any(
            p["Principal"] == "events.amazonaws.com" and _ref_of(p["SourceArn"]) == rule_id
            for p in permissions
        )


def test_async_invoke_config_follows_the_registry(case: tuple[Any, Job]) -> None:
    synth, job = case
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


def _interval_seconds(schedule: Schedule) -> int:
    """How far apart two fires of `schedule` are (a rate, or the gap before a cron's latest fire)."""
    parsed = parse_schedule(schedule.expression, schedule.timezone)
    if isinstance(parsed, Rate):
        return parsed.seconds
    latest = parsed.latest_at_or_before(datetime(2026, 6, 15, 12, tzinfo=UTC))
    assert latest is not None
    before = parsed.latest_at_or_before(latest - timedelta(seconds=1))
    assert before is not None
    return int((latest - before).total_seconds())


def test_mutating_jobs_may_be_retried_by_lambda() -> None:
    """A retried run cannot double an effect (UNIQUE keys / status guards in PostgreSQL,
    conditional updates in the graph registries, a SET NX marker per message in Redis), so
    a run that failed midway is retried instead of waiting a whole period (deleting what is
    past its retention is idempotent by nature); no retry outlives the job's slowest schedule."""
    for job in JOBS:
        if job.mutating:
            assert {Need.DATABASE, Need.GRAPH_REGISTRY, Need.BROKER, Need.DATA_RETENTION} & job.needs, (
                job.name
            )
            assert 1 <= job.retry.lambda_async_retries <= 2, job.name
        slowest = max([job.period_seconds, *(_interval_seconds(s) for s in job.more_schedules)])
        assert job.retry.max_event_age_seconds <= max(slowest, 60), job.name


def test_each_job_logs_with_retention_and_alarms_on_errors(case: tuple[Any, Job]) -> None:
    synth, job = case
    function = _function(synth, job)
    log_group_id = function["LoggingConfig"]["LogGroup"]["Ref"]
    log_group = synth.template(synth.stacks.jobs)["Resources"][log_group_id]["Properties"]
    assert log_group["RetentionInDays"] == synth.config.log_retention_days

    errors = synth.properties(synth.stacks.jobs.jobs[job.name].errors_alarm)
    function_id = synth.logical_id(synth.stacks.jobs.jobs[job.name].function)
    assert errors["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": function_id}}]
    assert (errors["Namespace"], errors["MetricName"], errors["Statistic"], errors["Threshold"]) == (
        "AWS/Lambda",
        "Errors",
        "Sum",
        1,
    )
    assert errors["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    topic = synth.logical_id(synth.stacks.monitoring.alarms.topic)
    assert errors["AlarmActions"] and all(topic in str(a) for a in errors["AlarmActions"])


def test_each_job_has_a_missed_run_alarm_on_its_successes(case: tuple[Any, Job]) -> None:
    """No successful run within 1.5 x the period: directly on JobSucceeded where an
    alarm can span the window, else on the watchdog's JobOverdue verdict."""
    synth, job = case
    alarm = synth.properties(synth.stacks.jobs.jobs[job.name].missed_run_alarm)
    topic = synth.logical_id(synth.stacks.monitoring.alarms.topic)
    assert alarm["AlarmActions"] and all(topic in str(a) for a in alarm["AlarmActions"])
    assert alarm["Namespace"] == metrics.JOBS_NAMESPACE
    assert alarm["Dimensions"] == [{"Name": metrics.JOB_DIMENSION, "Value": job.name}]
    assert alarm["TreatMissingData"] == "breaching"
    window = missed_run_window_seconds(job.period_seconds)
    warm_up = alarm["WarmUpConfiguration"]
    assert warm_up["OnlyStartEvaluatingAfterWarmUpPeriodEnds"] is True
    assert warm_up["WarmUpPeriodDurationInMinutes"] <= 2880  # CloudWatch's limit
    plan = direct_alarm_plan(job)
    if plan is not None:
        assert not needs_watchdog(job.period_seconds)
        assert (alarm["MetricName"], alarm["Statistic"], alarm["Threshold"]) == (
            metrics.JOB_SUCCEEDED,
            "Sum",
            1,
        )
        assert alarm["ComparisonOperator"] == "LessThanThreshold"
        span = alarm["Period"] * alarm["EvaluationPeriods"]
        assert alarm["DatapointsToAlarm"] == alarm["EvaluationPeriods"]  # every period without a success
        assert job.period_seconds * 1.5 <= span < job.period_seconds * 1.5 + HOUR
        # PutMetricAlarm's limits on the evaluated range
        assert span <= (DAY if alarm["Period"] < HOUR else 7 * DAY)
        # Judged first when the first fire after creation could have succeeded.
        assert warm_up["WarmUpPeriodDurationInMinutes"] * MINUTE >= window
    else:
        assert needs_watchdog(job.period_seconds)
        watchdog = next(j for j in synth.config.jobs if Need.METRICS_READ in j.needs)
        assert (alarm["MetricName"], alarm["Statistic"], alarm["Threshold"]) == (
            metrics.JOB_OVERDUE,
            "Maximum",
            1,
        )
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert alarm["Period"] == overdue_alarm_period_seconds(watchdog) == 2 * watchdog.period_seconds
        assert alarm["EvaluationPeriods"] == 1
        assert job.name in _watched(synth)


def _watched(synth: Any) -> dict[str, Any]:
    env = _function(synth, next(j for j in synth.config.jobs if Need.METRICS_READ in j.needs))
    watched = parse_watched_jobs(synth.render(env["Environment"]["Variables"]["WATCHED_JOBS"]))
    return {w.name: w for w in watched}


def test_the_watchdog_judges_exactly_the_long_period_jobs_by_their_deployed_schedules(
    synth: Any, synth_variant: Any
) -> None:
    for app in (synth, synth_variant):
        watched = _watched(app)
        long_jobs = {j.name: j for j in app.config.jobs if needs_watchdog(j.period_seconds)}
        assert set(watched) == set(long_jobs)
        for name, entry in watched.items():
            schedule = app.stacks.jobs.jobs[name].schedule
            assert entry.schedule_name == app.render({"Ref": app.logical_id(schedule)})
            assert (entry.schedule, entry.timezone, entry.period_seconds) == (
                long_jobs[name].schedule.expression,
                long_jobs[name].schedule.timezone,
                long_jobs[name].period_seconds,
            )
    assert set(_watched(synth_variant)) >= {"scaffold_monthly_db", "scaffold_weekly_storage"}


def test_a_long_period_job_without_a_watchdog_fails_the_synth_by_name() -> None:
    stack = cdk.Stack(cdk.App(), "Bare")
    monthly = next(j for j in SCAFFOLD_JOBS if j.name == "scaffold_monthly_db")
    lonely = Job(**{**monthly.__dict__, "needs": frozenset()})
    with pytest.raises(ConfigurationError, match=r"scaffold_monthly_db.*job_watchdog"):
        ScheduledJob(
            stack,
            "Lonely",
            job=lonely,
            code=lambda_.Code.from_inline("def handler(e, c): pass"),
            resources=JobResources(),
            alarm_topic=sns.Topic(stack, "Topic"),
            log_retention=logs.RetentionDays.ONE_WEEK,
            watchdog=None,
        )


def _statements(synth: Any, job: Job) -> list[dict[str, Any]]:
    function = _function(synth, job)
    role = synth.template(synth.stacks.jobs)["Resources"][_ref_of(function["Role"])]["Properties"]
    # Their own inline statements; beside them only the graph stack's policies that a need brings.
    brought = {Need.INGESTION_READ, Need.DATA_RETENTION} & job.needs
    assert len(role.get("ManagedPolicyArns", [])) == len(brought), job.name
    return [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]


RETENTION_CASES = [case for case in CASES if Need.DATA_RETENTION in case[1].needs]


@pytest.mark.parametrize("named", RETENTION_CASES, ids=_ids)
def test_data_retention_lists_and_deletes_staging_and_backups_and_scans_the_graph_table(
    named: tuple[str, Job], request: pytest.FixtureRequest
) -> None:
    synth, job = request.getfixturevalue(named[0]), named[1]
    function = _function(synth, job)
    role = synth.template(synth.stacks.jobs)["Resources"][_ref_of(function["Role"])]["Properties"]
    (attached,) = role["ManagedPolicyArns"]
    assert "Fn::ImportValue" in attached  # the graph stack's policy, by reference
    graph = synth.stacks.graph
    statements = synth.properties(graph.retention_policy)["PolicyDocument"]["Statement"]
    staging, backups = synth.logical_id(graph.buckets.staging), synth.logical_id(graph.buckets.backups)

    def arn(bucket: str, suffix: str = "") -> Any:
        found = {"Fn::GetAtt": [bucket, "Arn"]}
        return {"Fn::Join": ["", [found, suffix]]} if suffix else found

    assert [(_actions(s), s["Resource"]) for s in statements] == [
        (["s3:ListBucket"], [arn(staging), arn(backups)]),
        (["s3:DeleteObject"], [arn(staging, "/*"), arn(backups, "/backups/*")]),
        (["dynamodb:Scan"], {"Fn::GetAtt": [synth.logical_id(graph.registry.graphs), "Arn"]}),
    ]
    env = function["Environment"]["Variables"]
    assert {"STAGING_BUCKET", "BACKUP_BUCKET", "GRAPH_REGISTRY_TABLE"} <= set(env)
    assert (env["STAGING_RETENTION_DAYS"], env["BACKUP_RETENTION_DAYS"]) == ("7", "30")


INGESTION_CASES = [case for case in CASES if Need.INGESTION_READ in case[1].needs]


@pytest.mark.parametrize("named", INGESTION_CASES, ids=_ids)
def test_ingestion_read_lists_both_buckets_and_reads_only_manifests_and_reports(
    named: tuple[str, Job], request: pytest.FixtureRequest
) -> None:
    synth, job = request.getfixturevalue(named[0]), named[1]
    function = _function(synth, job)
    role = synth.template(synth.stacks.jobs)["Resources"][_ref_of(function["Role"])]["Properties"]
    policy = synth.stacks.graph.ingestion_reader_policy
    (attached,) = role["ManagedPolicyArns"]
    assert "Fn::ImportValue" in attached  # the graph stack's policy, by reference
    statements = synth.properties(policy)["PolicyDocument"]["Statement"]
    buckets = synth.stacks.graph.buckets
    uploads, staging = synth.logical_id(buckets.uploads), synth.logical_id(buckets.staging)

    def arn(bucket: str, suffix: str = "") -> Any:
        found = {"Fn::GetAtt": [bucket, "Arn"]}
        return {"Fn::Join": ["", [found, suffix]]} if suffix else found

    assert [(_actions(s), s["Resource"]) for s in statements] == [
        (["s3:ListBucket"], [arn(uploads), arn(staging)]),
        (["s3:GetObject"], [arn(uploads, "/batches/*"), arn(staging, "/ingest/*")]),
    ]
    env = function["Environment"]["Variables"]
    assert {"UPLOADS_BUCKET", "STAGING_BUCKET"} <= set(env)


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def _database_secret(synth: Any) -> str:
    """How the template spells the database secret (an import of the attachment, or the context ARN)."""
    database = synth.stacks.data.database
    if database.instance is None:
        return EXISTING_DATABASE_SECRET
    return str(synth.logical_id(database.instance.secret.node.default_child or database.instance.secret))


def _expected_secrets(synth: Any, job: Job) -> list[str]:
    """How the template names each secret the job may read, in grant order."""
    expected = []
    if Need.BROKER in job.needs:
        expected.append(synth.logical_id(synth.stacks.broker.broker.auth_token))
    if Need.DATABASE in job.needs:
        expected.append(_database_secret(synth))
    if Need.GRAPH_API in job.needs:
        expected.append(synth.logical_id(synth.stacks.graph.api_key.secret))
    return expected


def _expected_groups(synth: Any, job: Job) -> list[str]:
    """The security groups the job's function joins, in grant order (broker, database, graph nodes)."""
    expected = []
    if Need.BROKER in job.needs:
        expected.append(synth.logical_id(synth.stacks.broker.broker.client_security_group))
    if Need.DATABASE in job.needs:
        database = synth.stacks.data.database
        expected.append(
            EXISTING_DATABASE_GROUP
            if database.instance is None
            else synth.logical_id(database.access.client_security_group)
        )
    if Need.GRAPH_API in job.needs:
        expected.append(synth.logical_id(synth.stacks.graph.client_security_group))
    return expected


def _metrics_namespaces(synth: Any, job: Job) -> list[str]:
    """METRICS: the workers' and the jobs' namespaces; GRAPH_METRICS: the graph namespace only."""
    if Need.GRAPH_METRICS in job.needs:
        return [synth.config.graph.metrics_namespace]
    return sorted({synth.config.metrics_namespace, metrics.JOBS_NAMESPACE})


def test_grants_follow_the_jobs_needs(case: tuple[Any, Job]) -> None:
    synth, job = case
    statements = _statements(synth, job)
    actions = {a for s in statements for a in _actions(s)}
    function = _function(synth, job)
    env = function["Environment"]["Variables"]

    in_vpc = {Need.BROKER, Need.DATABASE, Need.GRAPH_API}
    assert ("cloudwatch:PutMetricData" in actions) == bool({Need.METRICS, Need.GRAPH_METRICS} & job.needs)
    assert ("ecs:DescribeServices" in actions) == (Need.ECS_READ in job.needs)
    assert ("secretsmanager:GetSecretValue" in actions) == bool(in_vpc & job.needs)
    assert ("s3:ListBucket" in actions) == (Need.STORAGE_READ in job.needs)
    assert ("cloudwatch:GetMetricData" in actions) == (Need.METRICS_READ in job.needs)
    assert ("VpcConfig" in function) == bool(in_vpc & job.needs)
    assert not {a for a in actions if a.startswith("s3:") and a != "s3:ListBucket"}, "storage is read-only"

    secrets = [str(s["Resource"]) for s in statements if s["Action"] == "secretsmanager:GetSecretValue"]
    expected_secrets = _expected_secrets(synth, job)
    assert len(secrets) == len(expected_secrets)
    for expected in expected_secrets:
        assert sum(expected in secret for secret in secrets) == 1, (expected, secrets)

    for statement in statements:
        if statement["Action"] == "cloudwatch:PutMetricData":
            assert statement["Resource"] == "*"
            namespaces = _metrics_namespaces(synth, job)
            assert statement["Condition"] == {"StringEquals": {"cloudwatch:namespace": namespaces}}
        if statement["Action"] == "ecs:DescribeServices":
            service_id = synth.logical_id(synth.stacks.worker.workers.service)
            assert service_id in str(statement["Resource"])  # the worker service's ARN, exported
        if statement["Action"] == "s3:ListBucket":
            bucket = synth.stacks.data.customer_data.bucket
            expected = (
                f"arn:aws:s3:::{EXISTING_BUCKET}"
                if synth.stacks.data.customer_data.access_logs is None
                else synth.logical_id(bucket)
            )
            assert expected in synth.render(statement["Resource"]) or expected in str(statement["Resource"])
            assert env["STORAGE_BUCKET"]
        if statement["Action"] == "cloudwatch:GetMetricData":
            assert statement["Resource"] == "*"  # no resource-level permissions exist
        if statement["Action"] == "scheduler:GetSchedule":
            schedules = (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            expected_ids = {
                synth.logical_id(synth.stacks.jobs.jobs[name].schedule) for name in _watched(synth)
            }
            assert {_ref_of(r) for r in schedules} == expected_ids
    logs_statements = [s for s in statements if "logs:PutLogEvents" in _actions(s)]
    assert [_ref_of(s["Resource"]) for s in logs_statements] == [function["LoggingConfig"]["LogGroup"]["Ref"]]

    groups = function.get("VpcConfig", {}).get("SecurityGroupIds", [])
    expected_groups = _expected_groups(synth, job)
    assert len(groups) == len(expected_groups)
    for group, expected in zip(groups, expected_groups, strict=True):
        assert expected in str(group)

    if Need.DATABASE in job.needs:
        assert env["DATABASE_SSLMODE"] == "verify-full"
        assert _database_secret(synth) in str(env["DATABASE_SECRET_ARN"])
    else:
        assert not {k for k in env if k.startswith("DATABASE_")}


def test_graph_plane_grants_follow_the_jobs_needs(case: tuple[Any, Job]) -> None:
    """GRAPH_REGISTRY: items of the two tables and the index, by name; EC2_READ:
    DescribeInstances (no resource type); GRAPH_API: the key secret and the node group."""
    synth, job = case
    statements = _statements(synth, job)
    actions = {a for s in statements for a in _actions(s)}
    env = _function(synth, job)["Environment"]["Variables"]
    assert ("ec2:DescribeInstances" in actions) == (Need.EC2_READ in job.needs)
    assert (
        ("dynamodb:Query" in actions) == ("dynamodb:PutItem" in actions) == (Need.GRAPH_REGISTRY in job.needs)
    )
    registry = synth.stacks.graph.registry
    tables = {synth.logical_id(registry.instances), synth.logical_id(registry.graphs)}
    for statement in statements:
        if statement["Action"] == "ec2:DescribeInstances":
            assert statement["Resource"] == "*"
        if any(a.startswith("dynamodb:") for a in _actions(statement)):
            resources = (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            for resource in resources:
                assert any(table in str(resource) for table in tables), resource
                assert "*" not in json.dumps(resource), resource
    graph_env = {"INSTANCE_REGISTRY_TABLE", "GRAPH_REGISTRY_TABLE"}
    assert (graph_env <= set(env)) == (Need.GRAPH_REGISTRY in job.needs)
    assert ("GRAPH_REGISTRY_TABLE" in env) == bool(
        {Need.GRAPH_REGISTRY, Need.GRAPH_REGISTRY_READ, Need.DATA_RETENTION} & job.needs
    )
    if Need.GRAPH_REGISTRY_READ in job.needs and Need.GRAPH_REGISTRY not in job.needs:
        # A reader of graph sizes: BatchGetItem on the graph table, no write, no other table.
        dynamo = [s for s in statements if any(a.startswith("dynamodb:") for a in _actions(s))]
        assert [_actions(s) for s in dynamo] == [["dynamodb:BatchGetItem"]]
        assert synth.logical_id(registry.graphs) in json.dumps(dynamo[0]["Resource"])
        assert synth.logical_id(registry.instances) not in json.dumps(dynamo[0]["Resource"])
    assert ("GRAPH_API_KEY_SECRET_ARN" in env) == ("GRAPH_ASG_NAME" in env) == (Need.GRAPH_API in job.needs)
    if Need.GRAPH_METRICS in job.needs:
        assert env["METRICS_NAMESPACE"] == synth.config.graph.metrics_namespace
    if Need.GRAPH_API in job.needs:
        assert env["GRAPH_ASG_NAME"] == synth.stacks.graph.nodes.asg_name
        assert synth.logical_id(synth.stacks.graph.api_key.secret) in str(env["GRAPH_API_KEY_SECRET_ARN"])


def test_registry_names_match_the_lambda_entry_points() -> None:
    stems = {p.stem for p in (REPO_ROOT / "bin" / "lambda").glob("*.py")}
    assert {job.name for job in JOBS} | set(DEPLOY_FUNCTIONS) | set(API_FUNCTIONS) == stems
    assert not {job.name for job in JOBS} & (set(DEPLOY_FUNCTIONS) | set(API_FUNCTIONS))


def test_every_registry_job_has_console_test_events() -> None:
    for job in JOBS:
        assert sorted((REPO_ROOT / "events" / job.name).glob("*.json")), f"events/{job.name}/ is empty"


def _schemas(synth: Any) -> dict[str, dict[str, Any]]:
    """The test-event schemas of the jobs stack and the API stack."""
    return {
        **synth.resources("AWS::EventSchemas::Schema", synth.stacks.jobs),
        **synth.resources("AWS::EventSchemas::Schema", synth.stacks.api),
    }


def test_every_console_test_event_is_deployed_as_a_shareable_test_event(
    synth: Any, synth_variant: Any
) -> None:
    for app in (synth, synth_variant):
        functions = {name: built.function for name, built in app.stacks.jobs.jobs.items()}
        functions["task_api"] = app.stacks.api.task_api.function
        if app.stacks.jobs.migration is not None:
            functions["db_migrate"] = app.stacks.jobs.migration.function
        by_function = {}
        for schema in _schemas(app).values():
            name = schema["SchemaName"]["Fn::Join"]
            assert name[0] == "" and name[1][0] == "_" and name[1][2] == "-schema"
            by_function[name[1][1]["Ref"]] = schema
        expected = 0
        for directory in sorted((REPO_ROOT / "events").iterdir()):
            files = sorted(directory.glob("*.json"))
            if not files:
                continue
            expected += 1
            schema = by_function[app.logical_id(functions[directory.name])]
            assert schema["Type"] == "OpenApi3"
            content = json.loads(schema["Content"])
            assert content["openapi"].startswith("3.")
            assert content["components"]["examples"] == {
                path.stem: {"value": json.loads(path.read_text())} for path in files
            }
        assert len(by_function) == expected


def test_the_test_event_registry_is_created_and_kept_or_referenced(synth: Any, synth_variant: Any) -> None:
    (registry_id, registry) = next(
        iter(
            (k, v)
            for k, v in synth.template(synth.stacks.jobs)["Resources"].items()
            if v["Type"] == "AWS::EventSchemas::Registry"
        )
    )
    assert registry["Properties"]["RegistryName"] == "lambda-testevent-schemas"
    assert registry["DeletionPolicy"] == "Retain"  # other functions' events live there too
    for schema in synth.resources("AWS::EventSchemas::Schema", synth.stacks.jobs).values():
        assert schema["RegistryName"] == {"Fn::GetAtt": [registry_id, "RegistryName"]}
    # The API stack's events go into it by name, deployed after the stack that creates it.
    for schema in synth.resources("AWS::EventSchemas::Schema", synth.stacks.api).values():
        assert schema["RegistryName"] == "lambda-testevent-schemas"
    assert synth.stacks.jobs in synth.stacks.api.dependencies
    assert synth_variant.resources("AWS::EventSchemas::Registry") == {}
    for schema in _schemas(synth_variant).values():
        assert schema["RegistryName"] == "lambda-testevent-schemas"


def _custom_resource(synth: Any) -> tuple[str, dict[str, Any]]:
    resources = synth.template(synth.stacks.jobs)["Resources"]
    (found,) = [(k, v) for k, v in resources.items() if v["Type"] == "Custom::BeatlessSchema"]
    return found


def test_migrations_run_on_deploy_before_the_database_jobs_exist(synth: Any, synth_variant: Any) -> None:
    for app in (synth, synth_variant):
        migration = app.stacks.jobs.migration
        assert migration is not None
        resource_id, resource = _custom_resource(app)
        migrations = REPO_ROOT / "src" / "beatless" / "db" / "migrations"
        assert resource["Properties"]["MigrationsHash"] == migrations_hash(migrations)
        # The framework function that serves the resource calls the migration Lambda.
        resources = app.template(app.stacks.jobs)["Resources"]
        framework = resources[_ref_of(resource["Properties"]["ServiceToken"])]["Properties"]
        target = framework["Environment"]["Variables"]["USER_ON_EVENT_FUNCTION_ARN"]
        assert _ref_of(target) == app.logical_id(migration.function)
        function = app.properties(migration.function)
        assert function["Handler"] == "db_migrate.handler"
        assert _database_secret(app) in str(function["Environment"]["Variables"]["DATABASE_SECRET_ARN"])
        assert function["VpcConfig"]["SecurityGroupIds"]
        for job in app.config.jobs:
            built = app.stacks.jobs.jobs[job.name]
            for element in (built.function, built.schedule):
                depends = resources[app.logical_id(element)].get("DependsOn", [])
                assert (resource_id in depends) == (Need.DATABASE in job.needs), (job.name, depends)


def test_migrations_hash_changes_with_any_migration_and_only_then(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (id int);\n")
    first = migrations_hash(tmp_path)
    assert migrations_hash(tmp_path) == first
    (tmp_path / "notes.txt").write_text("not a migration")
    assert migrations_hash(tmp_path) == first
    (tmp_path / "0002_b.sql").write_text("CREATE TABLE b (id int);\n")
    second = migrations_hash(tmp_path)
    assert second != first
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (id bigint);\n")
    assert migrations_hash(tmp_path) not in (first, second)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigurationError, match="no migrations"):
        migrations_hash(empty)
