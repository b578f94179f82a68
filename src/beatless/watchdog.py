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

Pure standard library; the Lambda entry point passes boto3 clients in.
"""

from __future__ import annotations

import calendar
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from beatless import metrics
from beatless.errors import InvalidInput

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR

# CloudWatch's longest alarm warm-up (WarmUpPeriodDurationInMinutes <= 2,880):
# a direct alarm waits one window after it is created, so windows up to this
# never alarm before a new job's first fire time could have succeeded.
MAX_ALARM_WINDOW_SECONDS = 2 * DAY

# How far back a cron expression is searched for its latest fire time.
_SEARCH_YEARS = 5


def missed_run_window_seconds(period_seconds: int) -> int:
    """1.5 x the period, rounded up to whole minutes (alarm periods are minutes)."""
    return math.ceil(period_seconds * 1.5 / MINUTE) * MINUTE


def needs_watchdog(period_seconds: int) -> bool:
    """True when the window is too long for a direct CloudWatch alarm."""
    return missed_run_window_seconds(period_seconds) > MAX_ALARM_WINDOW_SECONDS


# ---------------------------------------------------------------- schedules

# Literal names: calendar.month_abbr follows the locale.
_MONTHS = {
    name: i
    for i, name in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1
    )
}
# EventBridge cron counts days of the week 1-7 from Sunday; Python from Monday (0).
_AWS_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}


def _aws_to_python_weekday(day: int) -> int:
    return (day - 2) % 7


@dataclass(frozen=True)
class Rate:
    seconds: int


@dataclass(frozen=True)
class Cron:
    """An EventBridge Scheduler cron expression, as the sets of values it fires on.

    Supported: numbers, names (JAN-DEC, SUN-SAT), `*`, `?`, lists, ranges,
    steps (`0/15`, `*/5`, `1-5/2`) and `L` (last day of the month). `W`, `#`
    and `L` in the day-of-week field raise: no registry job uses them.
    """

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int] | None  # None: "?" (the day of the week decides)
    last_day_of_month: bool
    months: frozenset[int]
    weekdays: frozenset[int] | None  # Python weekdays (Monday = 0); None: "?"
    years: frozenset[int] | None  # None: every year
    zone: tzinfo

    def _day_matches(self, day: date) -> bool:
        if day.month not in self.months or (self.years is not None and day.year not in self.years):
            return False
        if self.weekdays is not None and day.weekday() not in self.weekdays:
            return False
        if self.days_of_month is not None or self.last_day_of_month:
            last = calendar.monthrange(day.year, day.month)[1]
            in_days = self.days_of_month is not None and day.day in self.days_of_month
            if not (in_days or (self.last_day_of_month and day.day == last)):
                return False
        return True

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        """The most recent fire time <= `moment` (UTC), or None within _SEARCH_YEARS."""
        local = moment.astimezone(self.zone)
        hours = sorted(self.hours, reverse=True)
        minutes = sorted(self.minutes, reverse=True)
        day = local.date()
        for _ in range(366 * _SEARCH_YEARS):
            if self._day_matches(day):
                for hour in hours:
                    for minute in minutes:
                        fire = datetime(day.year, day.month, day.day, hour, minute, tzinfo=self.zone)
                        if fire <= local:
                            return fire.astimezone(UTC)
            day -= timedelta(days=1)
        return None


def _range_values(field: str, text: str, low: int, high: int, names: Mapping[str, int]) -> set[int]:
    def number(token: str) -> int:
        token = token.strip().upper()
        if token in names:
            return names[token]
        if not token.isdigit():
            raise InvalidInput(field, f"{token!r} is not a number or a name")
        value = int(token)
        if not low <= value <= high:
            raise InvalidInput(field, f"{value} is outside {low}-{high}")
        return value

    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise InvalidInput(field, f"step {step_text!r} must be a positive integer")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = number(first), number(last)
            if start > end:
                raise InvalidInput(field, f"range {base!r} runs backwards")
        else:
            start = number(base)
            end = high if step_text else start  # "0/15": from 0 every 15
        values.update(range(start, end + 1, step))
    return values


def parse_schedule(expression: str, timezone: str = "UTC", *, field: str = "schedule") -> Cron | Rate:
    """Parse a Scheduler expression; raises InvalidInput naming `field`."""
    try:
        zone: tzinfo = UTC if timezone == "UTC" else ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"{field}.timezone", f"unknown time zone {timezone!r}") from None
    rate = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression.strip())
    if rate:
        unit = {"minute": MINUTE, "hour": HOUR, "day": DAY}[rate.group(2).rstrip("s")]
        if int(rate.group(1)) < 1:
            raise InvalidInput(field, f"{expression!r}: the rate must be at least 1")
        return Rate(int(rate.group(1)) * unit)
    cron = re.fullmatch(r"cron\((.*)\)", expression.strip())
    if not cron:
        raise InvalidInput(field, f"{expression!r} is neither rate(...) nor cron(...)")
    parts = cron.group(1).split()
    if len(parts) != 6:
        raise InvalidInput(field, f"{expression!r}: cron needs 6 fields, got {len(parts)}")
    minute, hour, dom, month, dow, year = parts
    if "W" in dom.upper() or "#" in dow or "L" in dow.upper() or ("L" in dom.upper() and dom.upper() != "L"):
        raise InvalidInput(
            field, f"{expression!r}: W, #, and L other than a lone day-of-month L are not supported"
        )
    if (dom == "?") == (dow == "?"):
        raise InvalidInput(field, f"{expression!r}: exactly one of day-of-month and day-of-week is '?'")
    last_day = dom.upper() == "L"
    days = None if dom == "?" or last_day else frozenset(_range_values(f"{field}.day", dom, 1, 31, {}))
    weekdays = (
        None
        if dow == "?"
        else frozenset(
            _aws_to_python_weekday(d) for d in _range_values(f"{field}.weekday", dow, 1, 7, _AWS_DAYS)
        )
    )
    return Cron(
        minutes=frozenset(_range_values(f"{field}.minute", minute, 0, 59, {})),
        hours=frozenset(_range_values(f"{field}.hour", hour, 0, 23, {})),
        days_of_month=days,
        last_day_of_month=last_day,
        months=frozenset(_range_values(f"{field}.month", month, 1, 12, _MONTHS)),
        weekdays=weekdays,
        years=None if year == "*" else frozenset(_range_values(f"{field}.year", year, 1970, 2199, {})),
        zone=zone,
    )


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
        raise InvalidInput(variable, "is required (a JSON list, possibly empty)")
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(variable, f"is not JSON: {error}") from None
    if not isinstance(entries, list):
        raise InvalidInput(variable, "must be a JSON list")
    jobs = []
    keys = {"name", "schedule", "timezone", "period_seconds", "schedule_name", "schedule_group"}
    for i, entry in enumerate(entries):
        where = f"{variable}[{i}]"
        if not isinstance(entry, dict):
            raise InvalidInput(where, "must be an object")
        unknown = sorted(set(entry) - keys)
        if unknown:
            raise InvalidInput(f"{where}.{unknown[0]}", "unknown key")
        for key in sorted(keys - {"schedule_group"}):
            if key not in entry:
                raise InvalidInput(f"{where}.{key}", "is required")
        for key in ("name", "schedule", "timezone", "schedule_name"):
            if not isinstance(entry[key], str) or not entry[key]:
                raise InvalidInput(f"{where}.{key}", "must be a non-empty string")
        period = entry["period_seconds"]
        if isinstance(period, bool) or not isinstance(period, int) or period < MINUTE:
            raise InvalidInput(f"{where}.period_seconds", f"must be an integer >= 60, got {period!r}")
        group = entry.get("schedule_group", "default")
        if not isinstance(group, str) or not group:
            raise InvalidInput(f"{where}.schedule_group", "must be a non-empty string")
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
        raise InvalidInput(variable, f"lists a job twice: {names}")
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
    cloudwatch: Any, jobs: Sequence[WatchedJob], start: datetime, end: datetime, bucket: int
) -> dict[str, list[datetime]]:
    queries = [
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
    cloudwatch: Any,
    scheduler: Any,
    own_name: str,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    publish: bool = True,
) -> WatchdogRun:
    """Judge every job and publish JobOverdue per job plus JobSucceeded for `own_name`.

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
    if publish:
        data = [
            {
                "MetricName": metrics.JOB_OVERDUE,
                "Dimensions": [{"Name": metrics.JOB_DIMENSION, "Value": verdict.job}],
                "Timestamp": at,
                "Value": 1.0 if verdict.overdue else 0.0,
                "Unit": "Count",
            }
            for verdict in verdicts
        ]
        data.append(
            {
                "MetricName": metrics.JOB_SUCCEEDED,
                "Dimensions": [{"Name": metrics.JOB_DIMENSION, "Value": own_name}],
                "Timestamp": at,
                "Value": 1.0,
                "Unit": "Count",
            }
        )
        cloudwatch.put_metric_data(Namespace=metrics.JOBS_NAMESPACE, MetricData=data)
    return WatchdogRun(verdicts=verdicts, published=publish)
