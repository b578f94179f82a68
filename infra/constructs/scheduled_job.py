"""One registry entry (`beatless.jobs.Job`) turned into AWS resources:

* a Lambda (python3.12, handler `<name>.handler`, the entry's timeout, memory
  and environment defaults) with its own log group (retention) and its own role;
* an EventBridge Scheduler schedule (the entry's expression and time zone,
  flexible window off, input `beatless.events.SCHEDULER_INPUT`, the entry's
  retry policy) with an encrypted, TLS-only SQS dead-letter queue;
* Lambda's async invoke config (the entry's retries and maximum event age);
* an `Errors` alarm and, for periods up to 16 h, a missed-run alarm, both to SNS;
* the grants and environment of each `Need` the entry declares.

Nothing here names a particular job: a new registry entry needs no change
unless it brings a new kind of `Need`, which fails the synth until one of
`NEED_GRANTS` handles it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

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

from beatless.errors import ConfigurationError
from beatless.events import SCHEDULER_INPUT
from beatless.jobs import Job, Need

# CloudWatch alarms cannot look back further than a day at one period.
_MAX_MISSED_RUN_WINDOW = 24 * 60 * 60


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
class JobResources:
    """Everything the stack can grant; a job receives only what its needs name."""

    broker: BrokerAccess | None = None
    metrics_namespace: str | None = None
    worker_service: WorkerServiceAccess | None = None


@dataclass
class Grant:
    """Built up per job from its needs, then applied to the function."""

    statements: list[iam.PolicyStatement]
    environment: dict[str, str]
    broker: BrokerAccess | None = None


def _unavailable(job: Job, need: Need) -> ConfigurationError:
    return ConfigurationError(f"job {job.name!r} needs {need.value!r}, which this stack does not provide")


def _grant_broker(job: Job, resources: JobResources, grant: Grant) -> None:
    broker = resources.broker
    if broker is None:
        raise _unavailable(job, Need.BROKER)
    grant.broker = broker
    grant.statements.append(
        iam.PolicyStatement(
            actions=["secretsmanager:GetSecretValue"], resources=[broker.auth_secret.secret_arn]
        )
    )
    grant.environment.update(broker.environment)
    grant.environment["BROKER_PASSWORD_SECRET_ARN"] = broker.auth_secret.secret_arn


def _grant_metrics(job: Job, resources: JobResources, grant: Grant) -> None:
    if resources.metrics_namespace is None:
        raise _unavailable(job, Need.METRICS)
    grant.statements.append(
        iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],  # PutMetricData has no resource type; the namespace condition scopes it
            conditions={"StringEquals": {"cloudwatch:namespace": resources.metrics_namespace}},
        )
    )
    grant.environment["METRICS_NAMESPACE"] = resources.metrics_namespace


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
}


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
    ):
        super().__init__(scope, id)
        self.job = job
        grant = grant_for(job, resources)
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
            vpc=grant.broker.vpc if grant.broker else None,
            vpc_subnets=grant.broker.subnets if grant.broker else None,
            security_groups=[grant.broker.security_group] if grant.broker else None,
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
        self.errors_alarm = self._build_errors_alarm(alarm_topic)
        self.missed_run_alarm = self._build_missed_run_alarm(alarm_topic)
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
        if grant.broker is not None:
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

    def _build_missed_run_alarm(self, topic: sns.ITopic) -> cloudwatch.Alarm | None:
        window = missed_run_window_seconds(self.job)
        if window is None:
            return None
        alarm = cloudwatch.Alarm(
            self,
            "MissedRunAlarm",
            alarm_description=f"{self.job.name} was not invoked for {window} s (1.5 x its period)",
            metric=self.function.metric_invocations(statistic="Sum", period=Duration.seconds(window)),
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            threshold=1,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
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
        reasons = []
        if grant.broker is not None:
            reasons.append(
                "ec2 network-interface actions for Lambda VPC networking (the set of "
                "AWSLambdaVPCAccessExecutionRole) take no resource-level scoping"
            )
        if Need.METRICS in self.job.needs:
            reasons.append(
                "cloudwatch:PutMetricData has no resource type and is scoped by the "
                "cloudwatch:namespace condition instead"
            )
        if reasons:
            Validations.of(self.role).acknowledge(
                Acknowledgment(
                    id="AwsSolutions::AwsSolutions-IAM5[Resource::*]", reason="; ".join(reasons) + "."
                )
            )


def missed_run_window_seconds(job: Job) -> int | None:
    """The missed-run alarm's window: 1.5 x the job's period, in whole minutes;
    None (no alarm) when that exceeds a day, the longest period CloudWatch evaluates."""
    window = math.ceil(job.period_seconds * 1.5 / 60) * 60
    return window if window <= _MAX_MISSED_RUN_WINDOW else None
