"""Missed-run verdicts for jobs whose window no CloudWatch alarm can span.

Every scheduled job must alarm when it has had no successful run (metric
`JobSucceeded`) within 1.5 x its period: `missed_run_window_seconds`. A
CloudWatch alarm can evaluate at most 7 days (1 day for periods under an hour)
and can wait at most 2 days after it is created before judging (its warm-up,
which keeps a new job that has not fired yet from alarming). So the CDK app
gives a job a direct alarm on `JobSucceeded` when its window is at most
`MAX_ALARM_WINDOW_SECONDS`, and otherwise (weekly, monthly jobs) lists it in
the `job_watchdog` Lambda's environment. That Lambda runs hourly, judges each
listed job with `judge` and publishes `JobOverdue` = 1/0 per job; the alarms on
`JobOverdue` treat missing data as breaching, so a dead watchdog alarms too.

The rule (`judge`), for a job with period P and window W = 1.5 P:

* cron schedules: let F be the most recent fire time of the expression that is
  at least W - P (the grace, half a period) in the past. The job is overdue
  when no successful run has been recorded at or after F. Fire times before
  the schedule was created or last changed (Scheduler's LastModificationDate,
  the "watch start") are never expected: after the first deploy, or after the
  monthly allocation day is moved, a job is first expected at its first fire
  time after that moment, plus the grace. A run started by hand after a missed
  fire counts as the success for it and clears the verdict.
* rate schedules (their phase is the schedule's creation time, which the
  expression does not say): overdue when no successful run in the last W,
  counted from the watch start at the earliest.
* a DISABLED schedule is expected to run nothing: never overdue.

Successes are read as CloudWatch sums per bucket of `bucket_seconds`; a
bucket counts as "at or after F" when it ends after F, so a success is never
missed and a run by hand at most one bucket (5 minutes) before F may count.

The schedule parsing and the window rule are `beatless.jobs.schedules`'s; this
module is the `job_watchdog` job's core: `watch_jobs(ctx, jobs)` runs on the
job runtime, which publishes the watchdog's own `JobSucceeded`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from beatless import metrics
from beatless.errors import InvalidInputError
from beatless.jobs.runtime import JobContext, JobOutcome
from beatless.jobs.schedules import HOUR, MINUTE, Cron, Rate, missed_run_window_seconds, parse_schedule

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_cloudwatch.type_defs import MetricDataQueryTypeDef, MetricDatumTypeDef
    from mypy_boto3_scheduler import EventBridgeSchedulerClient


# ---------------------------------------------------------------- judgement


@dataclass(frozen=True)
class WatchedJob:
    """What the CDK app tells the watchdog about one job (env WATCHED_JOBS)."""

    name: str
    schedule: str  # the Scheduler expression
    timezone: str
    period_seconds: int
    schedule_name: str  # the physical Scheduler schedule
    schedule_group: str = "default"
    parsed: Cron | Rate = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parsed", parse_schedule(self.schedule, self.timezone, field=self.name))

    @property
    def window_seconds(self) -> int:
        return missed_run_window_seconds(self.period_seconds)

    @property
    def grace_seconds(self) -> int:
        return self.window_seconds - self.period_seconds

    def expected_since(self, now: datetime, watch_start: datetime) -> datetime | None:
        """From when a success must exist at `now` (None: nothing is expected yet)."""
        if isinstance(self.parsed, Rate):
            since = now - timedelta(seconds=self.window_seconds)
        else:
            fire = self.parsed.latest_at_or_before(now - timedelta(seconds=self.grace_seconds))
            if fire is None:
                return None
            since = fire
        return since if since >= watch_start else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "schedule": self.schedule,
            "timezone": self.timezone,
            "period_seconds": self.period_seconds,
            "schedule_name": self.schedule_name,
            "schedule_group": self.schedule_group,
        }


@dataclass(frozen=True)
class Verdict:
    job: str
    overdue: bool
    expected_since: datetime | None
    last_success: datetime | None  # the end of the latest bucket with a success
    reason: str

    def as_dict(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment else None

        return {
            "overdue": self.overdue,
            "expected_since": iso(self.expected_since),
            "last_success": iso(self.last_success),
            "reason": self.reason,
        }


def judge(
    job: WatchedJob,
    *,
    now: datetime,
    watch_start: datetime,
    enabled: bool,
    success_buckets: Iterable[datetime],
    bucket_seconds: int,
) -> Verdict:
    """The verdict for `job` at `now` (see the module docstring for the rule).

    `success_buckets` are the start times of the metric buckets whose
    `JobSucceeded` sum was >= 1.
    """
    ends = [start + timedelta(seconds=bucket_seconds) for start in success_buckets]
    last = max(ends, default=None)
    if not enabled:
        return Verdict(job.name, False, None, last, "schedule disabled: no run expected")
    since = job.expected_since(now, watch_start)
    if since is None:
        return Verdict(
            job.name,
            False,
            None,
            last,
            f"nothing due yet: the first fire time after {watch_start.isoformat()} "
            f"(schedule created or changed) is not {job.grace_seconds} s old",
        )
    if last is not None and last > since:
        return Verdict(job.name, False, since, last, "succeeded since the due fire time")
    return Verdict(job.name, True, since, last, f"no successful run since {since.isoformat()}")


def bucket_seconds_for(age: timedelta) -> int:
    """The finest GetMetricData period CloudWatch still serves for data this old
    (5-minute data is kept 63 days, hourly data 455 days)."""
    return 5 * MINUTE if age <= timedelta(days=63) else HOUR


# ---------------------------------------------------------------- settings


def parse_watched_jobs(text: str | None, variable: str = "WATCHED_JOBS") -> tuple[WatchedJob, ...]:
    """The JSON list the CDK app puts in WATCHED_JOBS; errors name the entry's field."""
    if text is None or not text.strip():
        raise InvalidInputError(variable, "is required (a JSON list, possibly empty)")
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInputError(variable, f"is not JSON: {error}") from None
    if not isinstance(entries, list):
        raise InvalidInputError(variable, "must be a JSON list")
    jobs = []
    keys = {"name", "schedule", "timezone", "period_seconds", "schedule_name", "schedule_group"}
    for i, entry in enumerate(entries):
        where = f"{variable}[{i}]"
        if not isinstance(entry, dict):
            raise InvalidInputError(where, "must be an object")
        unknown = sorted(set(entry) - keys)
        if unknown:
            raise InvalidInputError(f"{where}.{unknown[0]}", "unknown key")
        for key in sorted(keys - {"schedule_group"}):
            if key not in entry:
                raise InvalidInputError(f"{where}.{key}", "is required")
        for key in ("name", "schedule", "timezone", "schedule_name"):
            if not isinstance(entry[key], str) or not entry[key]:
                raise InvalidInputError(f"{where}.{key}", "must be a non-empty string")
        period = entry["period_seconds"]
        if isinstance(period, bool) or not isinstance(period, int) or period < MINUTE:
            raise InvalidInputError(f"{where}.period_seconds", f"must be an integer >= 60, got {period!r}")
        group = entry.get("schedule_group", "default")
        if not isinstance(group, str) or not group:
            raise InvalidInputError(f"{where}.schedule_group", "must be a non-empty string")
        jobs.append(
            WatchedJob(
                name=entry["name"],
                schedule=entry["schedule"],
                timezone=entry["timezone"],
                period_seconds=period,
                schedule_name=entry["schedule_name"],
                schedule_group=group,
            )
        )
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise InvalidInputError(variable, f"lists a job twice: {names}")
    return tuple(jobs)


# ---------------------------------------------------------------- the run


@dataclass(frozen=True)
class WatchdogRun:
    verdicts: tuple[Verdict, ...]
    published: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": len(self.verdicts),
            "overdue": sorted(v.job for v in self.verdicts if v.overdue),
            "published": self.published,
            "verdicts": {v.job: v.as_dict() for v in self.verdicts},
        }


def _success_buckets(
    cloudwatch: CloudWatchClient, jobs: Sequence[WatchedJob], start: datetime, end: datetime, bucket: int
) -> dict[str, list[datetime]]:
    queries: list[MetricDataQueryTypeDef] = [
        {
            "Id": f"job{i}",
            "Label": job.name,
            "MetricStat": {
                "Metric": {
                    "Namespace": metrics.JOBS_NAMESPACE,
                    "MetricName": metrics.JOB_SUCCEEDED,
                    "Dimensions": [{"Name": metrics.JOB_DIMENSION, "Value": job.name}],
                },
                "Period": bucket,
                # Sum, not SampleCount: a publisher's 0 must never count as a success.
                "Stat": "Sum",
            },
            "ReturnData": True,
        }
        for i, job in enumerate(jobs)
    ]
    found: dict[str, list[datetime]] = {job.name: [] for job in jobs}
    by_id = {f"job{i}": job.name for i, job in enumerate(jobs)}
    token: str | None = None
    while True:
        request: dict[str, Any] = {"MetricDataQueries": queries, "StartTime": start, "EndTime": end}
        if token:
            request["NextToken"] = token
        response = cloudwatch.get_metric_data(**request)
        for result in response["MetricDataResults"]:
            name = by_id[result["Id"]]
            for stamp, value in zip(result["Timestamps"], result["Values"], strict=True):
                if value >= 1:
                    found[name].append(stamp.astimezone(UTC))
        token = response.get("NextToken")
        if not token:
            return found


def run_watchdog(
    jobs: Sequence[WatchedJob],
    *,
    cloudwatch: CloudWatchClient,
    scheduler: EventBridgeSchedulerClient,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    publish: bool = True,
) -> WatchdogRun:
    """Judge every job and publish JobOverdue per job, in one PutMetricData.

    Raises on any AWS error before publishing anything (the alarms then see
    missing data, which they treat as breaching).
    """
    at = now()
    schedules = {
        job.name: scheduler.get_schedule(Name=job.schedule_name, GroupName=job.schedule_group) for job in jobs
    }
    watch_starts = {name: s["LastModificationDate"].astimezone(UTC) for name, s in schedules.items()}
    enabled = {name: s.get("State", "ENABLED") == "ENABLED" for name, s in schedules.items()}
    expecting = {
        job.name: job.expected_since(at, watch_starts[job.name]) for job in jobs if enabled[job.name]
    }
    starts = [since for since in expecting.values() if since is not None]
    successes: dict[str, list[datetime]] = {job.name: [] for job in jobs}
    bucket = 5 * MINUTE
    if starts:
        earliest = min(starts)
        bucket = bucket_seconds_for(at - earliest)
        # Align to the bucket so the bucket holding the due fire time is read whole.
        start = datetime.fromtimestamp(earliest.timestamp() // bucket * bucket, UTC)
        queried = [job for job in jobs if expecting.get(job.name) is not None]
        successes.update(_success_buckets(cloudwatch, queried, start, at, bucket))
    verdicts = tuple(
        judge(
            job,
            now=at,
            watch_start=watch_starts[job.name],
            enabled=enabled[job.name],
            success_buckets=successes[job.name],
            bucket_seconds=bucket,
        )
        for job in jobs
    )
    if publish and verdicts:
        data: list[MetricDatumTypeDef] = [
            {
                "MetricName": metrics.JOB_OVERDUE,
                "Dimensions": [{"Name": metrics.JOB_DIMENSION, "Value": verdict.job}],
                "Timestamp": at,
                "Value": 1.0 if verdict.overdue else 0.0,
                "Unit": "Count",
            }
            for verdict in verdicts
        ]
        cloudwatch.put_metric_data(Namespace=metrics.JOBS_NAMESPACE, MetricData=data)
    return WatchdogRun(verdicts=verdicts, published=publish)


def watch_jobs(ctx: JobContext, jobs: Sequence[WatchedJob]) -> JobOutcome:
    """The work of one `job_watchdog` run: judge `jobs`, publish unless a dry run."""
    run = run_watchdog(jobs, cloudwatch=ctx.cloudwatch(), scheduler=ctx.scheduler(), publish=not ctx.dry_run)
    return JobOutcome(remaining=None, details=run.as_dict())
