"""One registry entry (`beatless.jobs.Job`) turned into AWS resources:

* a Lambda (python3.12, handler `<name>.handler`, the entry's timeout, memory
  and environment defaults) with its own log group (retention) and its own role;
* an EventBridge Scheduler schedule (the entry's expression and time zone,
  flexible window off, input `beatless.events.SCHEDULER_INPUT`, the entry's
  retry policy) with an encrypted, TLS-only SQS dead-letter queue;
* Lambda's async invoke config (the entry's retries and maximum event age);
* an `Errors` alarm and a missed-run alarm, both to SNS (see below);
* the grants and environment of each `Need` the entry declares (a job that
  needs the broker or the database runs in the VPC, in the groups they accept).

Missed-run alarm: "no successful run within 1.5 x the period", on the metric
`JobSucceeded` (Beatless/Jobs, dimension Job) that a run publishes only when
it did not raise. Where CloudWatch can evaluate that window (up to 2 days:
`beatless.watchdog.needs_watchdog`) it is a direct alarm (Sum < 1, missing data
breaching) with a warm-up of one window, so a job created or changed at T is
first judged at T + 1.5 periods: its first fire must have succeeded by then.
Longer windows (weekly, monthly jobs) are judged by the `job_watchdog` job,
which publishes `JobOverdue` per job; their alarm is on that (>= 1, missing
data breaching, so a watchdog that stops alarms too).

Nothing here names a particular job: a new registry entry needs no change
unless it brings a new kind of `Need`, which fails the synth until one of
`NEED_GRANTS` handles it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aws_cdk import Acknowledgment, Duration, Stack, Validations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from beatless import metrics
from beatless.errors import ConfigurationError
from beatless.events import SCHEDULER_INPUT
from beatless.jobs import DAY, HOUR, Job, Need
from beatless.watchdog import missed_run_window_seconds, needs_watchdog
from infra.constructs.customer_data import StorageAccess
from infra.constructs.database import DatabaseAccess


@dataclass(frozen=True)
class BrokerAccess:
    """What `Need.BROKER` gives a job: network access to Redis and its AUTH secret."""

    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    security_group: ec2.ISecurityGroup  # the group Redis accepts
    auth_secret: secretsmanager.ISecret
    environment: Mapping[str, str]  # BROKER_URL, QUEUES, BROKER_TRANSPORT_OPTIONS


@dataclass(frozen=True)
class WorkerServiceAccess:
    """What `Need.ECS_READ` gives a job: read access to the worker service."""

    cluster_name: str
    service_name: str
    service_arn: str


@dataclass(frozen=True)
class WatchdogAccess:
    """What `Need.METRICS_READ` gives a job: the schedules it judges and their metrics."""

    watched_jobs_json: str  # WATCHED_JOBS (beatless.watchdog.parse_watched_jobs)
    schedule_arns: Sequence[str]


@dataclass(frozen=True)
class JobResources:
    """Everything the stack can grant; a job receives only what its needs name."""

    broker: BrokerAccess | None = None
    metrics_namespace: str | None = None
    worker_service: WorkerServiceAccess | None = None
    database: DatabaseAccess | None = None
    storage: StorageAccess | None = None
    watchdog: WatchdogAccess | None = None


@dataclass
class Grant:
    """Built up per job from its needs, then applied to the function."""

    statements: list[iam.PolicyStatement]
    environment: dict[str, str]
    vpc: ec2.IVpc | None = None
    subnets: ec2.SubnetSelection | None = None
    security_groups: list[ec2.ISecurityGroup] = field(default_factory=list)
    wildcard_reasons: list[str] = field(default_factory=list)  # for the IAM5 acknowledgement

    def place(self, vpc: ec2.IVpc, subnets: ec2.SubnetSelection, group: ec2.ISecurityGroup) -> None:
        if self.vpc is not None and self.vpc is not vpc:
            raise ConfigurationError("a job's broker and database must be in the same VPC")
        self.vpc, self.subnets = vpc, subnets
        self.security_groups.append(group)


def _unavailable(job: Job, need: Need) -> ConfigurationError:
    return ConfigurationError(f"job {job.name!r} needs {need.value!r}, which this stack does not provide")


def _grant_broker(job: Job, resources: JobResources, grant: Grant) -> None:
    broker = resources.broker
    if broker is None:
        raise _unavailable(job, Need.BROKER)
    grant.place(broker.vpc, broker.subnets, broker.security_group)
    grant.statements.append(
        iam.PolicyStatement(
            actions=["secretsmanager:GetSecretValue"], resources=[broker.auth_secret.secret_arn]
        )
    )
    grant.environment.update(broker.environment)
    grant.environment["BROKER_PASSWORD_SECRET_ARN"] = broker.auth_secret.secret_arn


def metrics_namespaces(resources: JobResources) -> list[str]:
    """The namespaces a job with `Need.METRICS` may write: the workers' and the jobs'."""
    assert resources.metrics_namespace is not None
    return sorted({resources.metrics_namespace, metrics.JOBS_NAMESPACE})


def _grant_metrics(job: Job, resources: JobResources, grant: Grant) -> None:
    if resources.metrics_namespace is None:
        raise _unavailable(job, Need.METRICS)
    grant.statements.append(
        iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],  # PutMetricData has no resource type; the namespace condition scopes it
            conditions={"StringEquals": {"cloudwatch:namespace": metrics_namespaces(resources)}},
        )
    )
    grant.environment["METRICS_NAMESPACE"] = resources.metrics_namespace
    grant.wildcard_reasons.append(
        "cloudwatch:PutMetricData has no resource type and is scoped by the cloudwatch:namespace "
        "condition to the two Beatless namespaces instead"
    )


def _grant_database(job: Job, resources: JobResources, grant: Grant) -> None:
    database = resources.database
    if database is None:
        raise _unavailable(job, Need.DATABASE)
    grant.place(database.vpc, database.subnets, database.client_security_group)
    grant.statements.append(
        iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=[database.secret.secret_arn])
    )
    grant.environment.update(database.environment)


def _grant_storage_read(job: Job, resources: JobResources, grant: Grant) -> None:
    storage = resources.storage
    if storage is None:
        raise _unavailable(job, Need.STORAGE_READ)
    # Listing returns every object's size: all the usage collector reads. No GetObject.
    grant.statements.append(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[storage.bucket_arn]))
    grant.environment["STORAGE_BUCKET"] = storage.bucket_name


def _grant_metrics_read(job: Job, resources: JobResources, grant: Grant) -> None:
    watchdog = resources.watchdog
    if watchdog is None:
        raise _unavailable(job, Need.METRICS_READ)
    grant.statements.append(iam.PolicyStatement(actions=["cloudwatch:GetMetricData"], resources=["*"]))
    if watchdog.schedule_arns:
        grant.statements.append(
            iam.PolicyStatement(actions=["scheduler:GetSchedule"], resources=list(watchdog.schedule_arns))
        )
    grant.environment["WATCHED_JOBS"] = watchdog.watched_jobs_json
    grant.wildcard_reasons.append(
        "cloudwatch:GetMetricData takes no resource-level permissions (it reads any metric by query)"
    )


def _grant_ecs_read(job: Job, resources: JobResources, grant: Grant) -> None:
    service = resources.worker_service
    if service is None:
        raise _unavailable(job, Need.ECS_READ)
    grant.statements.append(
        iam.PolicyStatement(actions=["ecs:DescribeServices"], resources=[service.service_arn])
    )
    grant.environment["ECS_CLUSTER"] = service.cluster_name
    grant.environment["ECS_SERVICE"] = service.service_name


NEED_GRANTS: dict[Need, Callable[[Job, JobResources, Grant], None]] = {
    Need.BROKER: _grant_broker,
    Need.METRICS: _grant_metrics,
    Need.ECS_READ: _grant_ecs_read,
    Need.DATABASE: _grant_database,
    Need.STORAGE_READ: _grant_storage_read,
    Need.METRICS_READ: _grant_metrics_read,
}


@dataclass(frozen=True)
class DirectAlarmPlan:
    """A missed-run alarm CloudWatch evaluates itself (see the module docstring)."""

    period_seconds: int
    evaluation_periods: int  # all of them must breach
    warm_up_minutes: int


def direct_alarm_plan(job: Job) -> DirectAlarmPlan | None:
    """None when the window is too long for an alarm (the watchdog judges the job).

    Windows up to a day are one period; longer ones are N hourly periods that
    must all lack a success (PutMetricAlarm: period x periods <= 7 days, and
    <= 1 day for periods under an hour).
    """
    if needs_watchdog(job.period_seconds):
        return None
    window = missed_run_window_seconds(job.period_seconds)
    if window <= DAY:
        return DirectAlarmPlan(window, 1, window // 60)
    hours = math.ceil(window / HOUR)
    return DirectAlarmPlan(HOUR, hours, hours * 60)


def overdue_alarm_period_seconds(watchdog: Job) -> int:
    """Two watchdog periods: one late or failed watchdog run is tolerated, two alarm."""
    return 2 * watchdog.period_seconds


def grant_for(job: Job, resources: JobResources) -> Grant:
    grant = Grant(statements=[], environment=dict(job.environment))
    for need in sorted(job.needs):
        try:
            apply = NEED_GRANTS[need]
        except KeyError:
            raise ConfigurationError(
                f"job {job.name!r} needs {need.value!r}, which NEED_GRANTS in "
                "infra/constructs/scheduled_job.py cannot grant yet"
            ) from None
        apply(job, resources, grant)
    return grant


class ScheduledJob(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        job: Job,
        code: lambda_.Code,
        resources: JobResources,
        alarm_topic: sns.ITopic,
        log_retention: logs.RetentionDays,
        watchdog: Job | None = None,
        after: Sequence[Construct] = (),
    ):
        """`watchdog`: the job that judges long windows; `after`: what must be
        deployed before this function and its schedule (the schema migration)."""
        super().__init__(scope, id)
        self.job = job
        grant = grant_for(job, resources)
        self.grant = grant
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention)
        self.role = self._build_role(grant)
        self.function = lambda_.Function(
            self,
            "Function",
            description=job.summary[:256],
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.X86_64,
            handler=job.handler,
            code=code,
            timeout=Duration.seconds(job.timeout_seconds),
            memory_size=job.memory_mb,
            environment=grant.environment,
            role=self.role,
            log_group=self.log_group,
            vpc=grant.vpc,
            vpc_subnets=grant.subnets,
            security_groups=grant.security_groups or None,
        )
        self.function.configure_async_invoke(
            retry_attempts=job.retry.lambda_async_retries,
            max_event_age=Duration.seconds(job.retry.max_event_age_seconds),
        )
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        self.schedule = self._build_schedule()
        for dependency in after:
            self.function.node.add_dependency(dependency)
            self.schedule.node.add_dependency(dependency)
        self.errors_alarm = self._build_errors_alarm(alarm_topic)
        self.missed_run_alarm = self._build_missed_run_alarm(alarm_topic, watchdog)
        self._acknowledge(grant)
        Validations.of(self.dead_letter_queue).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-SQS3",
                reason=(
                    "This queue IS a dead-letter queue: EventBridge Scheduler's DeadLetterConfig for "
                    "this job's schedule (cdk-nag only recognises SQS redrive policies as DLQ use)."
                ),
            )
        )

    def _build_role(self, grant: Grant) -> iam.Role:
        # Our own role instead of AWSLambdaBasicExecutionRole: logs only to this job's group.
        statements = [
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            ),
            *grant.statements,
        ]
        if grant.vpc is not None:
            # What AWSLambdaVPCAccessExecutionRole grants: Lambda manages the
            # function's network interfaces with the function's own role.
            statements.append(
                iam.PolicyStatement(
                    actions=[
                        "ec2:CreateNetworkInterface",
                        "ec2:DescribeNetworkInterfaces",
                        "ec2:DescribeSubnets",
                        "ec2:DeleteNetworkInterface",
                        "ec2:AssignPrivateIpAddresses",
                        "ec2:UnassignPrivateIpAddresses",
                    ],
                    resources=["*"],
                )
            )
        return iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Runs the {self.job.name} Lambda",
            inline_policies={"Job": iam.PolicyDocument(statements=statements)},
        )

    def _build_schedule(self) -> scheduler.CfnSchedule:
        # L1 with our own role: the L2 target grants invoke on `<function>:*`
        # (every version and alias) where the function itself is all we call.
        job = self.job
        role = iam.Role(
            self,
            "ScheduleRole",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            ),
            description=f"EventBridge Scheduler invokes the {job.name} Lambda",
            inline_policies={
                "Invoke": iam.PolicyDocument(
                    statements=[
                        iam.PolicyStatement(
                            actions=["lambda:InvokeFunction"], resources=[self.function.function_arn]
                        ),
                        iam.PolicyStatement(
                            actions=["sqs:SendMessage"], resources=[self.dead_letter_queue.queue_arn]
                        ),
                    ]
                )
            },
        )
        Schedule = scheduler.CfnSchedule
        return Schedule(
            self,
            "Schedule",
            description=f"{job.name}: {job.schedule.expression} ({job.schedule.timezone})",
            schedule_expression=job.schedule.expression,
            schedule_expression_timezone=job.schedule.timezone,
            flexible_time_window=Schedule.FlexibleTimeWindowProperty(mode="OFF"),
            state="ENABLED",
            target=Schedule.TargetProperty(
                arn=self.function.function_arn,
                role_arn=role.role_arn,
                input=SCHEDULER_INPUT,
                retry_policy=Schedule.RetryPolicyProperty(
                    maximum_retry_attempts=job.retry.scheduler_attempts,
                    maximum_event_age_in_seconds=job.retry.max_event_age_seconds,
                ),
                dead_letter_config=Schedule.DeadLetterConfigProperty(arn=self.dead_letter_queue.queue_arn),
            ),
        )

    def _build_errors_alarm(self, topic: sns.ITopic) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            "ErrorsAlarm",
            alarm_description=f"{self.job.name} raised (Lambda Errors >= 1 in a minute)",
            metric=self.function.metric_errors(statistic="Sum", period=Duration.minutes(1)),
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            threshold=1,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,  # no run, no error
        )
        alarm.add_alarm_action(actions.SnsAction(topic))
        return alarm

    def _build_missed_run_alarm(self, topic: sns.ITopic, watchdog: Job | None) -> cloudwatch.Alarm:
        job = self.job
        window = missed_run_window_seconds(job.period_seconds)
        dimensions = {metrics.JOB_DIMENSION: job.name}
        plan = direct_alarm_plan(job)
        if plan is not None:
            alarm = cloudwatch.Alarm(
                self,
                "MissedRunAlarm",
                alarm_description=(
                    f"{job.name} had no successful run for {window} s (1.5 x its period; "
                    f"JobSucceeded, {plan.evaluation_periods} x {plan.period_seconds} s)"
                ),
                metric=cloudwatch.Metric(
                    namespace=metrics.JOBS_NAMESPACE,
                    metric_name=metrics.JOB_SUCCEEDED,
                    dimensions_map=dimensions,
                    statistic="Sum",
                    period=Duration.seconds(plan.period_seconds),
                ),
                comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                threshold=1,
                evaluation_periods=plan.evaluation_periods,
                datapoints_to_alarm=plan.evaluation_periods,
                treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
            )
            warm_up = plan.warm_up_minutes
        else:
            if watchdog is None:
                raise ConfigurationError(
                    f"job {job.name!r}: its missed-run window ({window} s) is longer than a CloudWatch "
                    "alarm can evaluate, and no registry job with Need.METRICS_READ (job_watchdog) judges it"
                )
            period = overdue_alarm_period_seconds(watchdog)
            alarm = cloudwatch.Alarm(
                self,
                "MissedRunAlarm",
                alarm_description=(
                    f"{job.name} had no successful run within 1.5 x its period after a due fire "
                    f"time (JobOverdue from {watchdog.name}), or {watchdog.name} published no "
                    f"verdict for {period} s"
                ),
                metric=cloudwatch.Metric(
                    namespace=metrics.JOBS_NAMESPACE,
                    metric_name=metrics.JOB_OVERDUE,
                    dimensions_map=dimensions,
                    statistic="Maximum",
                    period=Duration.seconds(period),
                ),
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                threshold=1,
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
            )
            warm_up = period // 60
        cfn = alarm.node.default_child
        assert isinstance(cfn, cloudwatch.CfnAlarm)
        # A new or changed alarm judges nothing before the job could first have succeeded.
        cfn.warm_up_configuration = cloudwatch.CfnAlarm.WarmUpConfigurationProperty(
            warm_up_period_duration_in_minutes=warm_up,
            only_start_evaluating_after_warm_up_period_ends=True,
        )
        alarm.add_alarm_action(actions.SnsAction(topic))
        return alarm

    def _acknowledge(self, grant: Grant) -> None:
        Validations.of(self.function).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-L1",
                reason=(
                    "Pinned to python3.12: the bundle's binary wheels are resolved for CPython 3.12 "
                    "(infra/constructs/lambda_bundle.py) and the code is tested against it; moving "
                    "runtimes is a deliberate change of both."
                ),
            )
        )
        reasons = list(grant.wildcard_reasons)
        if grant.vpc is not None:
            reasons.append(
                "ec2 network-interface actions for Lambda VPC networking (the set of "
                "AWSLambdaVPCAccessExecutionRole) take no resource-level scoping"
            )
        if reasons:
            Validations.of(self.role).acknowledge(
                Acknowledgment(
                    id="AwsSolutions::AwsSolutions-IAM5[Resource::*]", reason="; ".join(reasons) + "."
                )
            )
