"""One registry entry (`beatless.jobs.Job`) turned into AWS resources:

* a Lambda (python3.12, handler `<name>.handler`, the entry's timeout, memory
  and environment defaults) with its own log group (retention) and its own role;
* an EventBridge Scheduler schedule per entry of `job.schedules` (its
  expression and time zone, flexible window off, input
  `beatless.events.SCHEDULER_INPUT` merged with the schedule's own `input`,
  the entry's retry policy) with an encrypted, TLS-only SQS dead-letter queue
  shared by all of them; the first keeps the construct id `Schedule`, further
  ones are `Schedule<Label>`;
* an EventBridge rule per entry of `job.event_rules` (its source and
  detail type) invoking the function with the event as it is, with the
  entry's retries and maximum event age and the same dead-letter queue;
* Lambda's async invoke config (the entry's retries and maximum event age);
* an `Errors` alarm and a missed-run alarm, both to SNS (see below); a `Throttles` alarm
  (a run may be late) and a dead-letter alarm (the Scheduler or a rule gave up on an
  invocation: messages visible in the queue), both to SNS;
* the grants and environment of each `Need` the entry declares
  (`infra.components.job_grants`: a job that needs the broker or the database
  runs in the VPC, in the groups they accept).

Missed-run alarm: "no successful run within 1.5 x the period", on the metric
`JobSucceeded` (Beatless/Jobs, dimension Job) that a run publishes only when
it did not raise. Where CloudWatch can evaluate that window (up to 2 days:
`beatless.jobs.schedules.needs_watchdog`) it is a direct alarm (Sum < 1, missing data
breaching) with a warm-up of one window, so a job created or changed at T is
first judged at T + 1.5 periods: its first fire must have succeeded by then.
Longer windows (weekly, monthly jobs) are judged by the `job_watchdog` job,
which publishes `JobOverdue` per job; their alarm is on that (>= 1, missing
data breaching, so a watchdog that stops alarms too).

Nothing here names a particular job: a new registry entry needs no change
unless it brings a new kind of `Need`, which fails the synth until one of
`job_grants.NEED_GRANTS` handles it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Acknowledgment, Duration, Stack, Validations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from beatless import metrics
from beatless.errors import ConfigurationError
from beatless.events import SCHEDULER_INPUT
from beatless.jobs import DAY, HOUR, Job
from beatless.jobs.schedules import EventRule, Schedule, missed_run_window_seconds, needs_watchdog
from infra.components.alarms import count_alarm
from infra.components.job_grants import Grant, JobResources, grant_for
from infra.components.lambda_role import lambda_execution_role


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


def pascal(label: str) -> str:
    """`ec2_state_change` -> `Ec2StateChange` (construct ids of a job's further schedules and rules)."""
    return "".join(part.capitalize() for part in label.replace("-", "_").split("_"))


def schedule_input(schedule: Schedule) -> str:
    """The Scheduler target input: SCHEDULER_INPUT, plus the schedule's own keys."""
    if not schedule.input:
        return SCHEDULER_INPUT
    return json.dumps({**json.loads(SCHEDULER_INPUT), **schedule.input})


def overdue_alarm_period_seconds(watchdog: Job) -> int:
    """Two watchdog periods: one late or failed watchdog run is tolerated, two alarm."""
    return 2 * watchdog.period_seconds


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
        self.schedule_role = self._build_schedule_role()
        self.schedules = [
            self._build_schedule(schedule, "Schedule" if n == 0 else f"Schedule{pascal(schedule.label)}")
            for n, schedule in enumerate(job.schedules)
        ]
        self.schedule = self.schedules[0]
        self.rules = [self._build_rule(rule) for rule in job.event_rules]
        for dependency in after:
            self.function.node.add_dependency(dependency)
            for built in (*self.schedules, *self.rules):
                built.node.add_dependency(dependency)
        self.errors_alarm = self._build_errors_alarm(alarm_topic)
        self.throttles_alarm = self._alarm(
            "ThrottlesAlarm",
            f"{job.name} was throttled (Lambda Throttles >= 1 in 5 minutes): a run may be late",
            self.function.metric_throttles(statistic="Sum", period=Duration.minutes(5)),
            alarm_topic,
        )
        self.dead_letter_alarm = self._alarm(
            "DeadLetterAlarm",
            f"{job.name}: a schedule or rule gave up on an invocation (its dead-letter queue has a message)",
            self.dead_letter_queue.metric_approximate_number_of_messages_visible(
                statistic="Maximum", period=Duration.minutes(5)
            ),
            alarm_topic,
        )
        self.missed_run_alarm = self._build_missed_run_alarm(alarm_topic, watchdog)
        self._acknowledge()
        Validations.of(self.dead_letter_queue).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-SQS3",
                reason=(
                    "This queue IS a dead-letter queue: the DeadLetterConfig of this job's EventBridge "
                    "schedules and rules (cdk-nag only recognises SQS redrive policies as DLQ use)."
                ),
            )
        )

    def _build_role(self, grant: Grant) -> iam.Role:
        role = lambda_execution_role(
            self,
            "Role",
            description=f"Runs the {self.job.name} Lambda",
            policy_name="Job",
            log_group=self.log_group,
            statements=grant.statements,
            in_vpc=grant.vpc is not None,
            wildcard_reasons=grant.wildcard_reasons,
        )
        for policy in grant.managed_policies:
            role.add_managed_policy(policy)
        return role

    def _build_schedule_role(self) -> iam.Role:
        # One role for all the job's schedules (L1 schedules with our own role: the
        # L2 target grants invoke on `<function>:*`, every version and alias, where
        # the function itself is all we call).
        job = self.job
        return iam.Role(
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

    def _build_schedule(self, schedule: Schedule, id: str) -> scheduler.CfnSchedule:
        job = self.job
        name = f"{job.name} {schedule.label}" if schedule.label else job.name
        cfn = scheduler.CfnSchedule
        return cfn(
            self,
            id,
            description=f"{name}: {schedule.expression} ({schedule.timezone})",
            schedule_expression=schedule.expression,
            schedule_expression_timezone=schedule.timezone,
            flexible_time_window=cfn.FlexibleTimeWindowProperty(mode="OFF"),
            state="ENABLED",
            target=cfn.TargetProperty(
                arn=self.function.function_arn,
                role_arn=self.schedule_role.role_arn,
                input=schedule_input(schedule),
                retry_policy=cfn.RetryPolicyProperty(
                    maximum_retry_attempts=job.retry.scheduler_attempts,
                    maximum_event_age_in_seconds=job.retry.max_event_age_seconds,
                ),
                dead_letter_config=cfn.DeadLetterConfigProperty(arn=self.dead_letter_queue.queue_arn),
            ),
        )

    def _build_rule(self, rule: EventRule) -> events.Rule:
        """The event reaches the function as it is (the entry point translates it)."""
        job = self.job
        return events.Rule(
            self,
            f"Rule{pascal(rule.label)}",
            description=f"{job.name} {rule.label}: {rule.source} / {rule.detail_type}",
            event_pattern=events.EventPattern(source=[rule.source], detail_type=[rule.detail_type]),
            targets=[
                targets.LambdaFunction(
                    self.function,
                    dead_letter_queue=self.dead_letter_queue,
                    retry_attempts=job.retry.scheduler_attempts,
                    max_event_age=Duration.seconds(job.retry.max_event_age_seconds),
                )
            ],
        )

    def _alarm(
        self, id: str, description: str, metric: cloudwatch.IMetric, topic: sns.ITopic
    ) -> cloudwatch.Alarm:
        return count_alarm(self, id, description, metric, topic)

    def _build_errors_alarm(self, topic: sns.ITopic) -> cloudwatch.Alarm:
        return self._alarm(
            "ErrorsAlarm",
            f"{self.job.name} raised (Lambda Errors >= 1 in a minute)",
            self.function.metric_errors(statistic="Sum", period=Duration.minutes(1)),
            topic,
        )

    def _build_missed_run_alarm(self, topic: sns.ITopic, watchdog: Job | None) -> cloudwatch.Alarm:
        job = self.job
        window = missed_run_window_seconds(job.period_seconds)
        plan = direct_alarm_plan(job)
        datapoints_to_alarm: int | None
        if plan is not None:  # CloudWatch judges the window itself, on the job's successes
            description = (
                f"{job.name} had no successful run for {window} s (1.5 x its period; "
                f"JobSucceeded, {plan.evaluation_periods} x {plan.period_seconds} s)"
            )
            metric_name, statistic, period = metrics.JOB_SUCCEEDED, "Sum", plan.period_seconds
            comparison = cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD
            evaluation_periods = datapoints_to_alarm = plan.evaluation_periods
            warm_up = plan.warm_up_minutes
        else:  # on the watchdog's verdict
            if watchdog is None:
                raise ConfigurationError(
                    f"job {job.name!r}: its missed-run window ({window} s) is longer than a CloudWatch "
                    "alarm can evaluate, and no registry job with Need.METRICS_READ (job_watchdog) judges it"
                )
            period = overdue_alarm_period_seconds(watchdog)
            description = (
                f"{job.name} had no successful run within 1.5 x its period after a due fire "
                f"time (JobOverdue from {watchdog.name}), or {watchdog.name} published no "
                f"verdict for {period} s"
            )
            metric_name, statistic = metrics.JOB_OVERDUE, "Maximum"
            comparison = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
            evaluation_periods, datapoints_to_alarm = 1, None
            warm_up = period // 60
        alarm = cloudwatch.Alarm(
            self,
            "MissedRunAlarm",
            alarm_description=description,
            metric=cloudwatch.Metric(
                namespace=metrics.JOBS_NAMESPACE,
                metric_name=metric_name,
                dimensions_map={metrics.JOB_DIMENSION: job.name},
                statistic=statistic,
                period=Duration.seconds(period),
            ),
            comparison_operator=comparison,
            threshold=1,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=datapoints_to_alarm,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
        )
        cfn = alarm.node.default_child
        assert isinstance(cfn, cloudwatch.CfnAlarm)
        # A new or changed alarm judges nothing before the job could first have succeeded.
        cfn.warm_up_configuration = cloudwatch.CfnAlarm.WarmUpConfigurationProperty(
            warm_up_period_duration_in_minutes=warm_up,
            only_start_evaluating_after_warm_up_period_ends=True,
        )
        alarm.add_alarm_action(actions.SnsAction(topic))
        return alarm

    def _acknowledge(self) -> None:
        Validations.of(self.function).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-L1",
                reason=(
                    "Pinned to python3.12: the bundle's binary wheels are resolved for CPython 3.12 "
                    "(infra/components/lambda_bundle.py) and the code is tested against it; moving "
                    "runtimes is a deliberate change of both."
                ),
            )
        )
