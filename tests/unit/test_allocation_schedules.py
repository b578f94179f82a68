"""Pure parts of the credit jobs: the ISO week of the health check, its settings
(the allocation schedules it gets from the registry), and the registry relation
between the monthly jobs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from beatless.credits.health import HealthSettings
from beatless.errors import InvalidInputError
from beatless.jobs import GRAPH_ALLOCATION_DELAY_MINUTES, MonthlyTime, build_jobs
from beatless.jobs.periods import week_of
from beatless.jobs.schedules import parse_schedule


@pytest.mark.parametrize(
    ("moment", "start", "label"),
    [
        (datetime(2026, 11, 23, 6, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC), "2026-W48"),  # Monday
        (datetime(2026, 11, 29, 23, 59, 59, tzinfo=UTC), datetime(2026, 11, 23, tzinfo=UTC), "2026-W48"),
        (datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC), "2026-W49"),
        (datetime(2027, 1, 1, 12, tzinfo=UTC), datetime(2026, 12, 28, tzinfo=UTC), "2026-W53"),  # ISO year
        (datetime(2021, 1, 3, tzinfo=UTC), datetime(2020, 12, 28, tzinfo=UTC), "2020-W53"),
    ],
)
def test_the_health_check_period_is_the_iso_week(moment: datetime, start: datetime, label: str) -> None:
    period = week_of(moment)
    assert (period.start, period.end, period.label) == (start, start + timedelta(days=7), label)


@pytest.mark.parametrize(
    "monthly", [MonthlyTime(1, 3), MonthlyTime(28, 23, 15), MonthlyTime(15, 0, 0)], ids=str
)
def test_the_health_check_is_told_the_allocation_schedules_by_the_registry(monthly: MonthlyTime) -> None:
    jobs = {job.name: job for job in build_jobs(monthly_allocation=monthly)}
    health = jobs["credit_health_check"]
    assert (
        health.environment["SHARED_ALLOCATION_SCHEDULE"]
        == jobs["shared_credit_allocation"].schedule.expression
    )
    assert (
        health.environment["GRAPH_ALLOCATION_SCHEDULE"] == jobs["graph_credit_allocation"].schedule.expression
    )
    settings = HealthSettings.from_env(dict(health.environment))
    # The graph allocation fires GRAPH_ALLOCATION_DELAY_MINUTES after the shared one, every month.
    probe = datetime(2027, 5, 20, tzinfo=UTC)
    shared = settings.shared_schedule.latest_at_or_before(probe)
    graph = settings.graph_schedule.latest_at_or_before(
        probe + timedelta(minutes=GRAPH_ALLOCATION_DELAY_MINUTES)
    )
    assert shared is not None and graph == shared + timedelta(minutes=GRAPH_ALLOCATION_DELAY_MINUTES)
    assert settings.grace == timedelta(minutes=120)


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"GRAPH_ALLOCATION_SCHEDULE": "cron(30 3 1 * ? *)"}, "SHARED_ALLOCATION_SCHEDULE"),
        ({"SHARED_ALLOCATION_SCHEDULE": "cron(0 3 1 * ? *)"}, "GRAPH_ALLOCATION_SCHEDULE"),
        ({"SHARED_ALLOCATION_SCHEDULE": "rate(30 days)"}, "SHARED_ALLOCATION_SCHEDULE"),
        ({"GRAPH_ALLOCATION_SCHEDULE": "cron(30 3 1 *)"}, "GRAPH_ALLOCATION_SCHEDULE"),
        ({"ALLOCATION_GRACE_MINUTES": "soon"}, "ALLOCATION_GRACE_MINUTES"),
        ({"ALLOCATION_GRACE_MINUTES": "20000"}, "ALLOCATION_GRACE_MINUTES"),
    ],
)
def test_bad_health_check_settings_name_the_variable(env: dict[str, str], field: str) -> None:
    base = {
        "SHARED_ALLOCATION_SCHEDULE": "cron(0 3 1 * ? *)",
        "GRAPH_ALLOCATION_SCHEDULE": "cron(30 3 1 * ? *)",
    }
    complete = {**base, **env}
    if field in base and field not in env:
        del complete[field]
    with pytest.raises(InvalidInputError) as info:
        HealthSettings.from_env(complete)
    assert info.value.field.startswith(field)


def test_every_credit_job_schedule_is_the_documented_one() -> None:
    jobs = {job.name: job for job in build_jobs()}
    assert jobs["shared_credit_allocation"].schedule.expression == "cron(0 3 1 * ? *)"
    assert jobs["graph_credit_allocation"].schedule.expression == "cron(30 3 1 * ? *)"
    assert jobs["credit_health_check"].schedule.expression == "cron(0 6 ? * MON *)"
    assert jobs["monthly_usage_summary"].schedule.expression == "cron(0 6 2 * ? *)"
    for name in ("credit_health_check", "monthly_usage_summary"):
        cron = parse_schedule(jobs[name].schedule.expression)
        assert cron.latest_at_or_before(datetime(2026, 12, 7, 7, tzinfo=UTC)) is not None  # type: ignore[union-attr]
    assert not jobs["credit_health_check"].mutating
    assert all(
        jobs[n].mutating
        for n in ("shared_credit_allocation", "graph_credit_allocation", "monthly_usage_summary")
    )
