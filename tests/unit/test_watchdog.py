"""The watchdog's decisions with an injected clock: when is a long-period job
overdue, and when is it not yet expected (first deploy, moved schedule)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from beatless.errors import InvalidInputError
from beatless.jobs import DAY, HOUR, JOBS, MINUTE, MonthlyTime, build_jobs
from beatless.jobs.schedules import (
    MAX_ALARM_WINDOW_SECONDS,
    Cron,
    missed_run_window_seconds,
    needs_watchdog,
    parse_schedule,
)
from beatless.watchdog import Verdict, WatchedJob, judge, parse_watched_jobs

BUCKET = 5 * MINUTE
MONTH = 30 * DAY  # the registry's nominal period of a monthly job is of this order


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def monthly(day: int = 1, hour: int = 3, period: int = 31 * DAY) -> WatchedJob:
    return WatchedJob(
        name="monthly_job",
        schedule=MonthlyTime(day, hour).cron(),
        timezone="UTC",
        period_seconds=period,
        schedule_name="monthly-schedule",
    )


def verdict(
    job: WatchedJob, now: str, watch_start: str, successes: tuple[str, ...] = (), enabled: bool = True
) -> Verdict:
    return judge(
        job,
        now=at(now),
        watch_start=at(watch_start),
        enabled=enabled,
        success_buckets=[at(s) for s in successes],
        bucket_seconds=BUCKET,
    )


def test_every_registry_schedule_is_understood_by_the_watchdog() -> None:
    registries = [JOBS, build_jobs(monthly_allocation=MonthlyTime(28, 23, 15))]
    for jobs in registries:
        for job in jobs:
            parse_schedule(job.schedule.expression, job.schedule.timezone, field=job.name)


def test_windows_longer_than_two_days_go_to_the_watchdog() -> None:
    assert missed_run_window_seconds(MINUTE) == 2 * MINUTE  # 90 s rounded up to whole minutes
    assert missed_run_window_seconds(15 * MINUTE) == 23 * MINUTE
    assert missed_run_window_seconds(DAY) == 36 * HOUR
    assert not needs_watchdog(DAY)  # 36 h: a direct alarm (warm-up up to 2 days covers the first fire)
    assert needs_watchdog(7 * DAY)  # 10.5 days: beyond any alarm
    assert needs_watchdog(MONTH)
    assert MAX_ALARM_WINDOW_SECONDS == 2 * DAY


@pytest.mark.parametrize(
    ("expression", "moment", "latest"),
    [
        ("cron(0/15 * * * ? *)", "2026-11-23T10:07:59", "2026-11-23T10:00:00"),
        ("cron(0/15 * * * ? *)", "2026-11-23T10:15:00", "2026-11-23T10:15:00"),
        ("cron(5 * * * ? *)", "2026-11-23T10:04:00", "2026-11-23T09:05:00"),
        ("cron(0 2 * * ? *)", "2026-01-01T01:00:00", "2025-12-31T02:00:00"),
        ("cron(0 3 1 * ? *)", "2026-12-01T02:59:00", "2026-11-01T03:00:00"),
        ("cron(30 3 1 * ? *)", "2026-12-01T03:30:00", "2026-12-01T03:30:00"),
        # Monday (MON = 2 in EventBridge's Sunday-first numbering)
        ("cron(0 6 ? * MON *)", "2026-11-25T00:00:00", "2026-11-23T06:00:00"),
        ("cron(0 6 ? * 2 *)", "2026-11-23T05:00:00", "2026-11-16T06:00:00"),
        # The last day of the month, across a February of 28 days
        ("cron(0 0 L * ? *)", "2026-03-15T00:00:00", "2026-02-28T00:00:00"),
        ("cron(0 0 L * ? *)", "2028-03-01T00:00:00", "2028-02-29T00:00:00"),
        ("cron(0 12 ? * MON-FRI *)", "2026-11-29T23:00:00", "2026-11-27T12:00:00"),
        ("cron(0 0 1 JAN ? 2020-2021)", "2026-01-01T00:00:00", "2021-01-01T00:00:00"),
    ],
)
def test_latest_fire_time_of_a_cron_expression(expression: str, moment: str, latest: str) -> None:
    cron = parse_schedule(expression)
    assert isinstance(cron, Cron)
    assert cron.latest_at_or_before(at(moment)) == at(latest)


def test_cron_in_a_time_zone_fires_at_local_time() -> None:
    cron = parse_schedule("cron(0 9 * * ? *)", "Europe/Berlin")
    assert isinstance(cron, Cron)
    assert cron.latest_at_or_before(at("2026-07-01T12:00:00")) == at("2026-07-01T07:00:00")  # CEST
    assert cron.latest_at_or_before(at("2026-01-01T12:00:00")) == at("2026-01-01T08:00:00")  # CET


@pytest.mark.parametrize(
    ("expression", "field"),
    [
        ("every hour", "job_x"),
        ("cron(0 3 * * *)", "job_x"),
        ("cron(0 3 * * MON *)", "job_x"),  # neither day field is "?"
        ("cron(0 3 LW * ? *)", "job_x"),
        ("cron(0 3 ? * 6#3 *)", "job_x"),
        ("cron(61 3 * * ? *)", "job_x.minute"),
        ("cron(0 3 ? * FUNDAY *)", "job_x.weekday"),
        ("cron(0 3 9-2 * ? *)", "job_x.day"),
    ],
)
def test_unsupported_or_malformed_expressions_name_the_job(expression: str, field: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        parse_schedule(expression, field="job_x")
    assert raised.value.field == field


def test_a_monthly_job_deployed_mid_month_is_not_overdue_before_its_first_fire_plus_grace() -> None:
    job = monthly()  # 1st at 03:00; grace = 0.5 x 31 days = 15.5 days
    deployed = "2026-11-23T10:00:00"
    for now in ("2026-11-23T10:00:00", "2026-11-30T00:00:00", "2026-12-01T03:00:00", "2026-12-16T14:59:00"):
        result = verdict(job, now, deployed)
        assert not result.overdue, now
        assert result.expected_since is None
    # The fire of Nov 1 (before the deploy) is never expected; that of Dec 1 is, after the grace.
    missed = verdict(job, "2026-12-16T15:00:00", deployed)
    assert missed.overdue and missed.expected_since == at("2026-12-01T03:00:00")
    done = verdict(job, "2026-12-16T15:00:00", deployed, successes=("2026-12-01T03:00:00",))
    assert not done.overdue and done.last_success == at("2026-12-01T03:05:00")


def test_steady_state_a_missed_month_is_overdue_and_a_run_by_hand_clears_it() -> None:
    job = monthly()
    created = "2026-01-10T00:00:00"
    november = ("2026-11-01T03:00:00",)
    assert not verdict(job, "2026-12-16T14:00:00", created, november).overdue  # Dec 1 still in grace
    late = verdict(job, "2026-12-16T15:00:00", created, november)
    assert late.overdue and late.last_success == at("2026-11-01T03:05:00")
    rerun = verdict(job, "2026-12-18T09:00:00", created, (*november, "2026-12-18T08:40:00"))
    assert not rerun.overdue


def test_a_success_before_the_due_fire_time_does_not_count() -> None:
    job = monthly()
    result = verdict(job, "2026-12-20T00:00:00", "2026-01-01T00:00:00", ("2026-11-30T23:00:00",))
    assert result.overdue


def test_moving_the_allocation_day_restarts_expectations_from_the_change() -> None:
    # Moved on Nov 10 from the 1st to the 5th: the Nov 5 fire (before the change, under
    # the new expression) never happened and is not expected; Dec 5 is.
    job = monthly(day=5)
    changed = "2026-11-10T12:00:00"
    assert not verdict(job, "2026-11-25T00:00:00", changed).overdue
    assert verdict(job, "2026-12-21T00:00:00", changed).overdue


def test_a_disabled_schedule_is_never_overdue() -> None:
    result = verdict(monthly(), "2027-06-01T00:00:00", "2026-01-01T00:00:00", enabled=False)
    assert not result.overdue and "disabled" in result.reason


def test_a_weekly_job_on_mondays() -> None:
    job = WatchedJob("weekly", "cron(0 6 ? * MON *)", "UTC", 7 * DAY, "weekly-schedule")
    created = "2026-11-01T00:00:00"
    # Monday Nov 16 06:00 + 3.5 days of grace = Thursday Nov 19 18:00
    assert not verdict(job, "2026-11-19T17:59:00", created, ("2026-11-09T06:00:00",)).overdue
    assert verdict(job, "2026-11-19T18:00:00", created, ("2026-11-09T06:00:00",)).overdue
    assert not verdict(job, "2026-11-19T18:00:00", created, ("2026-11-16T06:00:00",)).overdue


def test_a_rate_schedule_needs_a_success_within_its_window() -> None:
    job = WatchedJob("rated", "rate(7 days)", "UTC", 7 * DAY, "rated-schedule")
    created = "2026-11-01T00:00:00"
    assert not verdict(job, "2026-11-11T11:59:00", created).overdue  # 10.5 days not yet passed
    assert verdict(job, "2026-11-11T12:00:00", created).overdue
    assert not verdict(job, "2026-11-20T00:00:00", created, ("2026-11-15T00:00:00",)).overdue


def test_watched_jobs_from_the_environment_are_parsed_strictly() -> None:
    good = [
        {
            "name": "monthly_job",
            "schedule": "cron(0 3 1 * ? *)",
            "timezone": "UTC",
            "period_seconds": MONTH,
            "schedule_name": "s1",
        }
    ]
    (job,) = parse_watched_jobs(json.dumps(good))
    assert (job.name, job.schedule_group, job.window_seconds) == ("monthly_job", "default", 45 * DAY)
    assert parse_watched_jobs("[]") == ()
    bad = [
        (None, "WATCHED_JOBS"),
        ("{", "WATCHED_JOBS"),
        ('{"a": 1}', "WATCHED_JOBS"),
        (json.dumps([{**good[0], "extra": 1}]), "WATCHED_JOBS[0].extra"),
        (
            json.dumps([{k: v for k, v in good[0].items() if k != "schedule_name"}]),
            "WATCHED_JOBS[0].schedule_name",
        ),
        (json.dumps([{**good[0], "period_seconds": "60"}]), "WATCHED_JOBS[0].period_seconds"),
        (json.dumps([{**good[0], "schedule": "cron(0 3 1 * * *)"}]), "monthly_job"),
        (json.dumps([{**good[0], "timezone": "Mars/Olympus"}]), "monthly_job.timezone"),
        (json.dumps(good * 2), "WATCHED_JOBS"),
    ]
    for text, field in bad:
        with pytest.raises(InvalidInputError) as raised:
            parse_watched_jobs(text)
        assert raised.value.field == field, text


def test_expected_since_is_never_before_the_watch_start() -> None:
    job = monthly()
    start = at("2026-11-23T10:00:00")
    for days in range(0, 80, 3):
        now = start + timedelta(days=days)
        since = job.expected_since(now, start)
        assert since is None or since >= start
