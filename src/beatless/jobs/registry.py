"""The registry of scheduled jobs: the single source of every schedule.

Pure data, standard library only. Read by the CDK app (one Lambda and one
EventBridge Scheduler schedule per entry), by the Lambdas themselves (through
the job runtime, `beatless.jobs.runtime`), by the local runner, by the README's
job table and by the tests. Nothing else in the repository repeats a schedule
expression.

A job's `name` is the stem of its entry point `bin/lambda/<name>.py`; `core`
names the module that holds its work (no job's core imports another's: the
import rules in pyproject.toml).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from beatless.jobs.periods import PeriodKind
from beatless.jobs.schedules import DAY, HOUR, MINUTE, EventRule, MonthlyTime, Schedule


class Need(enum.StrEnum):
    """What a job needs at run time. Infra grants exactly these (and sets the
    environment that goes with each); the job runtime opens exactly these."""

    BROKER = "broker"  # VPC access to Redis and read access to its AUTH secret
    METRICS = "metrics"  # cloudwatch:PutMetricData in the job's namespace
    ECS_READ = "ecs_read"  # ecs:DescribeServices on the worker service
    DATABASE = "database"  # VPC access to PostgreSQL and read access to its credentials secret
    STORAGE_READ = "storage_read"  # s3:ListBucket on the customer data bucket (usage collection)
    METRICS_READ = "metrics_read"  # cloudwatch:GetMetricData, scheduler:GetSchedule (job_watchdog)
    GRAPH_REGISTRY = "graph_registry"  # read/write the instance and graph registries (DynamoDB)
    GRAPH_REGISTRY_READ = "graph_registry_read"  # dynamodb:BatchGetItem on the graph registry (sizes)
    GRAPH_API = "graph_api"  # network access to the graph nodes and read access to their API key secret
    GRAPH_METRICS = "graph_metrics"  # cloudwatch:PutMetricData in the graph namespace (Beatless/Graph)
    EC2_READ = "ec2_read"  # ec2:DescribeInstances
    # List the uploads and staging buckets; read upload batch manifests and staging reports.
    INGESTION_READ = "ingestion_read"
    # List and delete staging objects and graph backups; scan the graph registry (last backups).
    DATA_RETENTION = "data_retention"
    # lambda:InvokeFunction on the worker monitor: a producer wakes it (`beatless.queues.wake`).
    WAKE_MONITOR = "wake_monitor"


class JobClock(enum.StrEnum):
    """Whose "now" bounds a run: no job acts on a time later than its clock."""

    DATABASE = "database"  # PostgreSQL's now(): the clock the job's effects are stamped with
    WALL = "wall"  # the Lambda's own clock (jobs without a database)


@dataclass(frozen=True)
class RetryPolicy:
    """How often a missed or failed run is tried again.

    `scheduler_attempts`/`max_event_age_seconds` bound EventBridge Scheduler's
    delivery retries; `lambda_async_retries` bounds Lambda's own retries of a
    run that raised. A retried run must not double an effect: jobs that mutate
    rely on UNIQUE keys, not on these numbers.
    """

    scheduler_attempts: int
    max_event_age_seconds: int
    lambda_async_retries: int = 0


@dataclass(frozen=True)
class Job:
    name: str
    summary: str
    core: str  # the module holding the job's work (e.g. "beatless.credits.holds_cleanup")
    schedule: Schedule
    period_seconds: int  # nominal period; the missed-run alarm allows 1.5x
    timeout_seconds: int
    memory_mb: int
    needs: frozenset[Need]
    retry: RetryPolicy
    idempotency: str  # what makes a replayed or concurrent run harmless
    period: PeriodKind = PeriodKind.SLOT  # the business period a run is about
    mutating: bool = False  # mutating jobs accept {"dry_run": true}
    # Jobs that only publish may accept a dry run too (judge, publish nothing).
    dry_run: bool | None = None  # None: as `mutating`
    environment: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Further schedules, each with its label and input (the first is `schedule`), and
    # EventBridge rules that invoke the job with their events.
    more_schedules: tuple[Schedule, ...] = ()
    event_rules: tuple[EventRule, ...] = ()

    def __post_init__(self) -> None:
        if self.mutating and self.dry_run is False:
            raise ValueError(f"job {self.name!r} mutates, so it must accept a dry run")
        labels = [s.label for s in self.schedules] + [r.label for r in self.event_rules]
        if len(self.schedules) > 1 and (not all(labels) or len(set(labels)) != len(labels)):
            raise ValueError(f"job {self.name!r}: several schedules need distinct labels, got {labels}")

        if len({s.timezone for s in self.schedules}) > 1:
            raise ValueError(f"job {self.name!r}: its schedules must share one time zone")

    @property
    def schedules(self) -> tuple[Schedule, ...]:
        return (self.schedule, *self.more_schedules)

    @property
    def entry_point(self) -> str:
        return f"bin/lambda/{self.name}.py"

    @property
    def handler(self) -> str:
        return f"{self.name}.handler"

    @property
    def accepts_dry_run(self) -> bool:
        return self.mutating if self.dry_run is None else self.dry_run

    @property
    def clock(self) -> JobClock:
        """A job with a database acts as of the database's clock, others as of the wall clock."""
        return JobClock.DATABASE if Need.DATABASE in self.needs else JobClock.WALL


# When the monthly credit allocations run (UTC). The graph allocation follows
# the shared-repository one by GRAPH_ALLOCATION_DELAY_MINUTES. Operators may
# move both with CDK context (monthlyAllocationDay / monthlyAllocationHour);
# infra/app.py passes those to `build_jobs`, nothing else repeats the times.
MONTHLY_ALLOCATION = MonthlyTime(day=1, hour=3)
GRAPH_ALLOCATION_DELAY_MINUTES = 30


def build_jobs(*, monthly_allocation: MonthlyTime = MONTHLY_ALLOCATION) -> tuple[Job, ...]:
    """Every scheduled job; `monthly_allocation` moves the monthly allocation pair."""
    graph_allocation = monthly_allocation.later(GRAPH_ALLOCATION_DELAY_MINUTES)
    return (
        Job(
            name="worker_monitor",
            summary=(
                "Reads Celery queue depth (pending + reserved) from Redis and publishes it, "
                "with the worker service's running count, as high-resolution CloudWatch metrics."
            ),
            core="beatless.monitor",
            schedule=Schedule("rate(1 minute)"),
            period_seconds=MINUTE,
            # 6 readings 10 s apart fill the minute; the handler stops sampling
            # early when its remaining time runs low. One reading when the first finds no
            # task and no worker: producers wake it when work arrives (`beatless.queues.wake`).
            timeout_seconds=75,
            memory_mb=256,
            needs=frozenset({Need.BROKER, Need.METRICS, Need.ECS_READ}),
            # A late reading is worthless: the next minute's run replaces it.
            retry=RetryPolicy(scheduler_attempts=0, max_event_age_seconds=60, lambda_async_retries=0),
            idempotency="Publishes readings only; a duplicate run adds datapoints and changes nothing else.",
            environment=MappingProxyType(
                {"SAMPLES": "6", "SAMPLE_INTERVAL_SECONDS": "10", "IDLE_SAMPLES": "1"}
            ),
        ),
        Job(
            name="credit_reservation_cleanup",
            summary=(
                "Releases credit holds whose expires_at has passed, so their credits are available again."
            ),
            core="beatless.credits.holds_cleanup",
            schedule=Schedule("cron(0/15 * * * ? *)"),
            period_seconds=15 * MINUTE,
            timeout_seconds=300,
            memory_mb=512,
            needs=frozenset({Need.DATABASE}),
            retry=RetryPolicy(
                scheduler_attempts=3, max_event_age_seconds=15 * MINUTE, lambda_async_retries=2
            ),
            idempotency=(
                "A hold moves held -> expired once (row lock + status guard in the same transaction); "
                "replays find nothing to do."
            ),
            mutating=True,
        ),
        Job(
            name="job_watchdog",
            summary=(
                "Publishes JobOverdue (1/0) for every job whose missed-run window is longer than a "
                "CloudWatch alarm can span (weekly, monthly): 1 when a due fire time has no success."
            ),
            # Off the hour, so it does not start with the hourly and quarter-hour jobs.
            core="beatless.watchdog",
            schedule=Schedule("cron(50 * * * ? *)"),
            period_seconds=HOUR,
            timeout_seconds=60,
            memory_mb=256,
            needs=frozenset({Need.METRICS_READ, Need.METRICS}),
            # A verdict an hour late is still useful; a duplicate only adds datapoints.
            retry=RetryPolicy(
                scheduler_attempts=2, max_event_age_seconds=30 * MINUTE, lambda_async_retries=1
            ),
            idempotency="Reads metrics and schedules, publishes verdicts; a duplicate run adds datapoints.",
            dry_run=True,  # judges and reports, publishes no verdict
        ),
        Job(
            name="shared_credit_allocation",
            summary=(
                "Grants each shared-repository subscription active at the scheduled time its plan's "
                "monthly credits, up to the plan's balance cap: one allocation per account and month."
            ),
            core="beatless.credits.allocation",
            schedule=Schedule(monthly_allocation.cron()),
            period_seconds=31 * DAY,  # the longest gap between two monthly fire times
            period=PeriodKind.MONTH,
            timeout_seconds=900,
            memory_mb=512,
            needs=frozenset({Need.DATABASE}),
            # Late is fine, missing is not: retry for hours (Lambda's async limit is 6 h).
            retry=RetryPolicy(scheduler_attempts=10, max_event_age_seconds=6 * HOUR, lambda_async_retries=2),
            idempotency=(
                "monthly_allocations PRIMARY KEY (account, month) and the ledger's UNIQUE key "
                "allocation:subscription:<account>:<month>, written with the ledger entry under the "
                "account's row lock; replays find the allocation."
            ),
            mutating=True,
        ),
        Job(
            name="graph_credit_allocation",
            summary=(
                "Grants each graph its tier's monthly credits (the tier in force at the scheduled time), "
                "only up to the tier's balance cap (possibly 0, still recorded): one allocation per "
                "account and month."
            ),
            core="beatless.credits.allocation",
            schedule=Schedule(graph_allocation.cron()),
            period_seconds=31 * DAY,
            period=PeriodKind.MONTH,
            timeout_seconds=900,
            memory_mb=512,
            needs=frozenset({Need.DATABASE}),
            retry=RetryPolicy(scheduler_attempts=10, max_event_age_seconds=6 * HOUR, lambda_async_retries=2),
            idempotency=(
                "monthly_allocations PRIMARY KEY (account, month) and the ledger's UNIQUE key "
                "allocation:graph:<account>:<month>, written with the ledger entry under the account's "
                "row lock; a 0 grant at the cap is recorded too, so replays never top up."
            ),
            mutating=True,
        ),
        Job(
            name="credit_health_check",
            summary=(
                "Reconciles every account's balance and held amount with the ledger and the holds, "
                "counts negative balances and missed monthly allocations, publishes the figures and "
                "raises on any inconsistency. Read-only."
            ),
            core="beatless.credits.health",
            schedule=Schedule("cron(0 6 ? * MON *)"),
            period_seconds=7 * DAY,
            period=PeriodKind.WEEK,
            timeout_seconds=900,
            memory_mb=512,
            needs=frozenset({Need.DATABASE}),
            # A rerun repeats the figures (and the alarm), nothing else.
            retry=RetryPolicy(scheduler_attempts=3, max_event_age_seconds=6 * HOUR, lambda_async_retries=1),
            idempotency="Read-only (READ ONLY transactions); a duplicate run publishes the same figures.",
            # Which month's allocations are due by now: the allocation schedules, from here only.
            environment=MappingProxyType(
                {
                    "SHARED_ALLOCATION_SCHEDULE": monthly_allocation.cron(),
                    "GRAPH_ALLOCATION_SCHEDULE": graph_allocation.cron(),
                }
            ),
        ),
        Job(
            name="monthly_usage_summary",
            summary=(
                "Writes one usage summary per graph for the previous month: credits allocated, consumed "
                "and charged for storage, mean stored bytes and GiB-days, tier at the month's end."
            ),
            core="beatless.storage.summary",
            schedule=Schedule("cron(0 6 2 * ? *)"),
            period_seconds=31 * DAY,
            period=PeriodKind.PREVIOUS_MONTH,
            timeout_seconds=900,
            memory_mb=512,
            needs=frozenset({Need.DATABASE}),
            retry=RetryPolicy(scheduler_attempts=10, max_event_age_seconds=6 * HOUR, lambda_async_retries=2),
            idempotency=(
                "monthly_usage_summaries PRIMARY KEY (graph, month), INSERT ... ON CONFLICT DO NOTHING; "
                "the first summary stays."
            ),
            mutating=True,
        ),
        Job(
            name="auth_cleanup",
            summary=(
                "Deactivates API keys whose expiry or revocation has passed; deletes keys and sessions "
                "that ended longer ago than their retention (AUTH_API_KEY_RETENTION_DAYS, default 90; "
                "AUTH_SESSION_RETENTION_DAYS, default 7)."
            ),
            core="beatless.auth.cleanup",
            schedule=Schedule("cron(0 * * * ? *)"),
            period_seconds=HOUR,
            timeout_seconds=300,
            memory_mb=256,
            needs=frozenset({Need.DATABASE}),
            # A late run does the same work; the next hour's run catches up anyway.
            retry=RetryPolicy(scheduler_attempts=3, max_event_age_seconds=HOUR, lambda_async_retries=2),
            idempotency=(
                "Row lock + status guard per key (FOR UPDATE SKIP LOCKED, deactivated_at IS NULL) and "
                "deletes of locked rows, in the chunk's transaction; replays find nothing to do."
            ),
            mutating=True,
        ),
        Job(
            name="storage_usage_collector",
            summary=(
                "Measures every graph's stored bytes (customer data bucket prefixes, graph databases) and "
                "writes one snapshot per graph for the hour it runs in."
            ),
            core="beatless.storage.collector",
            schedule=Schedule("cron(5 * * * ? *)"),
            period_seconds=HOUR,
            period=PeriodKind.HOUR,
            timeout_seconds=600,
            memory_mb=256,
            needs=frozenset({Need.DATABASE, Need.STORAGE_READ, Need.GRAPH_REGISTRY_READ}),
            # A snapshot measures "now" for its hour: deliver within the hour or not at all.
            retry=RetryPolicy(
                scheduler_attempts=3, max_event_age_seconds=50 * MINUTE, lambda_async_retries=2
            ),
            idempotency=(
                "storage_usage_snapshots PRIMARY KEY (graph, hour), INSERT ... ON CONFLICT DO NOTHING; "
                "replays measure only graphs without a snapshot."
            ),
            mutating=True,
        ),
        Job(
            name="storage_billing",
            summary=(
                "Charges each graph, for the previous UTC day, its average stored bytes above the tier's "
                "included storage (exact micro-credits, rounded down), even below a zero balance."
            ),
            core="beatless.storage.billing",
            schedule=Schedule("cron(0 2 * * ? *)"),
            period_seconds=DAY,
            period=PeriodKind.PREVIOUS_DAY,
            timeout_seconds=900,
            memory_mb=512,
            needs=frozenset({Need.DATABASE}),
            # The day billed comes from the scheduled time, so a late run still bills the right day.
            retry=RetryPolicy(scheduler_attempts=10, max_event_age_seconds=6 * HOUR, lambda_async_retries=2),
            idempotency=(
                "storage_charges PRIMARY KEY (graph, day) and the ledger's UNIQUE key "
                "storage:<graph>:<day>, written in one transaction; replays find the charge."
            ),
            mutating=True,
        ),
        Job(
            name="pending_transaction_processor",
            summary=(
                "Settles transactions still pending after PENDING_TRANSACTION_MAX_AGE_MINUTES (default "
                "60): finalized into the ledger or reverted, as transaction_kinds says."
            ),
            # 7 minutes after the reservation cleanup's quarter hours, so the two do not start together.
            core="beatless.credits.pending",
            schedule=Schedule("cron(7/15 * * * ? *)"),
            period_seconds=15 * MINUTE,
            timeout_seconds=300,
            memory_mb=256,
            needs=frozenset({Need.DATABASE}),
            retry=RetryPolicy(
                scheduler_attempts=3, max_event_age_seconds=15 * MINUTE, lambda_async_retries=2
            ),
            idempotency=(
                "Row lock + status guard per transaction (FOR UPDATE SKIP LOCKED, status = 'pending') "
                "and the ledger's UNIQUE key transaction:<id>, in one transaction."
            ),
            mutating=True,
        ),
        Job(
            name="kuzu_instance_monitor",
            summary=(
                "Keeps the graph node registry true (EC2 state and each node's /health), publishes graph "
                "capacity (AvailableSlots, which scales the node group out) and removes deleted and "
                "orphaned graphs from the graph registry."
            ),
            core="beatless.graphs.monitor",
            schedule=Schedule(
                "rate(5 minutes)", label="metrics", input=MappingProxyType({"action": "collect_metrics"})
            ),
            more_schedules=(
                Schedule("rate(1 hour)", label="health", input=MappingProxyType({"action": "health_check"})),
                Schedule(
                    "cron(40 4 * * ? *)",
                    label="cleanup",
                    input=MappingProxyType({"action": "cleanup_graphs"}),
                ),
            ),
            event_rules=(
                EventRule(
                    "ec2_state_change", source="aws.ec2", detail_type="EC2 Instance State-change Notification"
                ),
            ),
            period_seconds=5 * MINUTE,  # the most frequent of its schedules
            timeout_seconds=120,
            memory_mb=256,
            needs=frozenset({Need.GRAPH_REGISTRY, Need.GRAPH_API, Need.GRAPH_METRICS, Need.EC2_READ}),
            # A late check is soon replaced by the next; retried once for a transient failure.
            retry=RetryPolicy(
                scheduler_attempts=2, max_event_age_seconds=10 * MINUTE, lambda_async_retries=1
            ),
            idempotency=(
                "Each run sets the registry to what EC2 and the nodes say now (conditional updates); a "
                "removed instance or graph stays removed; a duplicate run publishes the same figures."
            ),
            mutating=True,
            environment=MappingProxyType(
                {"UNHEALTHY_GRACE_SECONDS": "900", "DELETED_GRAPH_RETENTION_DAYS": "7"}
            ),
        ),
        Job(
            name="ingestion_queue_processor",
            summary=(
                "Hands each complete upload batch that is not staged yet to the worker as one stage_files "
                "operation (a Celery message on the ingest queue, sent once per batch)."
            ),
            core="beatless.ingestion.queue",
            schedule=Schedule("rate(5 minutes)"),
            period_seconds=5 * MINUTE,
            timeout_seconds=120,
            memory_mb=256,
            needs=frozenset({Need.BROKER, Need.INGESTION_READ, Need.WAKE_MONITOR}),
            # A retry sends nothing twice (the markers); the next run finds what a failed one left.
            retry=RetryPolicy(scheduler_attempts=1, max_event_age_seconds=5 * MINUTE, lambda_async_retries=1),
            idempotency=(
                "A batch is sent under a task id derived from it, behind a Redis SET NX marker (a day): "
                "replayed and concurrent runs send it once; a staged batch (its report exists) is skipped."
            ),
            mutating=True,
        ),
        Job(
            name="data_retention",
            summary=(
                "Deletes staging files and graph backups past their retention (days per kind), never "
                "the last backup of a graph that has a database or lost its node."
            ),
            core="beatless.graphs.retention",
            schedule=Schedule("cron(20 3 * * ? *)"),
            period_seconds=DAY,
            timeout_seconds=900,
            memory_mb=256,
            needs=frozenset({Need.DATA_RETENTION}),
            retry=RetryPolicy(scheduler_attempts=2, max_event_age_seconds=6 * HOUR, lambda_async_retries=1),
            idempotency=(
                "Deletes only what is past its retention as of the run; a replay finds it gone. The "
                "last backups are read from the graph registry on every run."
            ),
            mutating=True,
            environment=MappingProxyType({"STAGING_RETENTION_DAYS": "7", "BACKUP_RETENTION_DAYS": "30"}),
        ),
    )


JOBS: tuple[Job, ...] = build_jobs()

# Lambdas in bin/lambda/ that are not scheduled: CloudFormation runs them on deploy.
DEPLOY_FUNCTIONS: tuple[str, ...] = ("db_migrate",)
# Lambdas in bin/lambda/ behind API Gateway (the task API: `beatless.api`).
API_FUNCTIONS: tuple[str, ...] = ("task_api",)


@dataclass(frozen=True)
class FunctionLimits:
    """Memory and timeout of a Lambda that is not a registry job (infra deploys it with these;
    `beatless invoke` gives its local context the same deadline)."""

    memory_mb: int
    timeout_seconds: int


FUNCTION_LIMITS: dict[str, FunctionLimits] = {
    "db_migrate": FunctionLimits(memory_mb=512, timeout_seconds=600),
    "task_api": FunctionLimits(memory_mb=512, timeout_seconds=29),  # HTTP API integrations end at 30 s
}
assert set(FUNCTION_LIMITS) == {*DEPLOY_FUNCTIONS, *API_FUNCTIONS}


def job(name: str) -> Job:
    """The registry entry called `name` (KeyError names the unknown job)."""
    for entry in JOBS:
        if entry.name == name:
            return entry
    raise KeyError(f"no scheduled job named {name!r}; known: {', '.join(j.name for j in JOBS)}")
