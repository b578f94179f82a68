"""One run of a PostgreSQL-backed scheduled job, the same way for every job.

`run_scheduled_job(name, event, context, work, env=os.environ)`:

1. parses the event strictly (`beatless.events`; `dry_run` allowed when the
   registry entry is `mutating`) — a malformed event raises `InvalidInput`
   naming the field before the database is touched;
2. reads the settings from `env` once per process (cached per environment):
   `beatless.db.settings` plus `JOB_SAFETY_MARGIN_MS` (default 10,000; the
   statement timeout must fit in the job's Lambda timeout minus the margin);
3. derives the business period from `scheduled_time` (`period(...)`, default:
   the `period_seconds` slot of the registry entry) — never from the clock;
4. connects (autocommit, `application_name` = `beatless:<job>`, statement and
   idle-in-transaction timeouts) and calls `work(ctx)` once;
5. publishes the run's counts as CloudWatch metrics in Embedded Metric Format
   on stdout (namespace `JOBS_NAMESPACE`, the single dimension `Job`=<name>):
   one metric per count (snake_case -> CamelCase), `Remaining`, and
   `JobSucceeded` = 1 when `work` returned. When `work` raises, the counts of
   the chunks it had committed are published (no `JobSucceeded`) and the error
   propagates. A dry run publishes nothing (it must not look like a real run to
   the missed-run alarm);
6. returns the summary: job, scheduled_time, period, dry_run, counts,
   remaining, complete, plus the job's own `details`.

`work` receives a `JobContext`: the connection, the parsed event, the period,
the `Deadline`, and `add(name, n)` to count effects it has COMMITTED.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from beatless.db.connect import Database, database_from_env
from beatless.db.settings import ENVIRONMENT as DATABASE_ENVIRONMENT
from beatless.errors import InvalidInput
from beatless.events import Option, ScheduledEvent, parse_scheduled_event
from beatless.jobrun.deadline import Deadline
from beatless.jobrun.periods import Period, slot
from beatless.jobs import Job, job
from beatless.metrics import JOB_DIMENSION, JOB_SUCCEEDED, JOBS_NAMESPACE
from beatless.settings import Env, env_int

DEFAULT_SAFETY_MARGIN_MS = 10_000
REMAINING_METRIC = "Remaining"
ENVIRONMENT = (*DATABASE_ENVIRONMENT, "JOB_SAFETY_MARGIN_MS")


@dataclass(frozen=True)
class JobOutcome:
    """What `work` returns: how much it left for the next run, and extra summary keys."""

    remaining: int = 0
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class JobContext:
    job: Job
    event: ScheduledEvent
    period: Period
    conn: Any  # psycopg.Connection in autocommit mode: effects go in `with conn.transaction():`
    deadline: Deadline
    clock: Callable[[], float] = time.monotonic
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def scheduled_time(self) -> datetime:
        return self.event.scheduled_time

    @property
    def dry_run(self) -> bool:
        return self.event.dry_run

    @property
    def options(self) -> Mapping[str, Any]:
        return self.event.options

    def add(self, name: str, n: int) -> None:
        """Count `n` committed effects under `name` (snake_case; it becomes a metric)."""
        self.counts[name] = self.counts.get(name, 0) + n


@dataclass(frozen=True)
class JobSettings:
    database: Database
    safety_margin_ms: int

    @classmethod
    def from_env(cls, env: Env, job_entry: Job) -> JobSettings:
        database = database_from_env(env)
        margin = env_int(env, "JOB_SAFETY_MARGIN_MS", DEFAULT_SAFETY_MARGIN_MS, minimum=0, maximum=600_000)
        budget_ms = job_entry.timeout_seconds * 1000 - margin
        if database.settings.statement_timeout_ms >= budget_ms:
            raise InvalidInput(
                "STATEMENT_TIMEOUT_MS",
                f"{database.settings.statement_timeout_ms} ms does not fit in {job_entry.name}'s "
                f"{job_entry.timeout_seconds} s timeout minus the {margin} ms safety margin",
            )
        return cls(database, margin)


_settings_cache: dict[tuple[str, tuple[str | None, ...]], JobSettings] = {}
_settings_lock = threading.Lock()


def settings_for(job_entry: Job, env: Env) -> JobSettings:
    """Settings per job and environment, built once per process (credentials cached)."""
    key = (job_entry.name, tuple(env.get(name) for name in ENVIRONMENT))
    with _settings_lock:
        if key not in _settings_cache:
            _settings_cache[key] = JobSettings.from_env(env, job_entry)
        return _settings_cache[key]


def reset_settings() -> None:
    """Forget cached settings and credentials (tests that change the environment)."""
    with _settings_lock:
        _settings_cache.clear()


def metric_name(count: str) -> str:
    """`released_micro` -> `ReleasedMicro`."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", count):
        raise ValueError(f"count names are snake_case, got {count!r}")
    return "".join(part.capitalize() for part in count.split("_"))


def publish_metrics(job_name: str, counts: Mapping[str, int], *, succeeded: bool) -> None:
    """One EMF document on stdout: every count, and JobSucceeded when `succeeded`.

    A private provider per call (Powertools' `Metrics` shares its metric set across
    instances, which concurrent runs in one process must not), and no `service`
    dimension even if POWERTOOLS_SERVICE_NAME is set: the alarms select exactly
    {Job: <name>}.
    """
    from aws_lambda_powertools.metrics import Metrics, MetricUnit
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
        AmazonCloudWatchEMFProvider,
    )

    metrics = Metrics(provider=AmazonCloudWatchEMFProvider(namespace=JOBS_NAMESPACE, service=""))
    metrics.add_dimension(name=JOB_DIMENSION, value=job_name)
    for name, value in counts.items():
        metrics.add_metric(name=metric_name(name), unit=MetricUnit.Count, value=value)
    if succeeded:
        metrics.add_metric(name=JOB_SUCCEEDED, unit=MetricUnit.Count, value=1)
    if counts or succeeded:
        metrics.flush_metrics()


def run_scheduled_job(
    job_name: str,
    event: Any,
    context: Any,
    work: Callable[[JobContext], JobOutcome],
    *,
    env: Env,
    options: Mapping[str, Option] | None = None,
    period: Callable[[datetime], Period] | None = None,
    logger: Any = None,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, Any]:
    """Run `work` once for `job_name` (see the module docstring). Raises on failure."""
    entry = job(job_name)
    parsed = parse_scheduled_event(event, options=options, allow_dry_run=entry.mutating, now=now)
    settings = settings_for(entry, env)
    business_period = (period or (lambda t: slot(t, entry.period_seconds)))(parsed.scheduled_time)
    deadline = Deadline.from_context(context, settings.safety_margin_ms, clock)
    conn = settings.database.connect(application_name=f"beatless:{entry.name}")
    ctx = JobContext(entry, parsed, business_period, conn, deadline, clock)
    try:
        outcome = work(ctx)
    except BaseException:
        if not parsed.dry_run:
            publish_metrics(entry.name, ctx.counts, succeeded=False)
        if logger is not None:
            logger.exception(f"{entry.name} failed", extra={"counts": ctx.counts})
        raise
    finally:
        conn.close()
    if not parsed.dry_run:
        publish_metrics(entry.name, {**ctx.counts, "remaining": outcome.remaining}, succeeded=True)
    summary: dict[str, Any] = {
        "job": entry.name,
        "scheduled_time": parsed.scheduled_time.isoformat().replace("+00:00", "Z"),
        "period": business_period.as_dict(),
        "dry_run": parsed.dry_run,
        "counts": dict(ctx.counts),
        "remaining": outcome.remaining,
        "complete": outcome.remaining == 0,
        **outcome.details,
    }
    if logger is not None:
        logger.info(f"{entry.name} run", extra={"summary": summary})
    return summary
