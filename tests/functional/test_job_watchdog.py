"""The job_watchdog Lambda against moto's Scheduler and CloudWatch: what it
publishes (JobOverdue per watched job to CloudWatch; its own JobSucceeded, like
every job's, as an EMF line from the job runtime) is the outcome."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.exceptions import ClientError

import job_watchdog
from beatless import metrics
from beatless.aws import client
from beatless.errors import InvalidInputError
from beatless.jobs import DAY
from beatless.watchdog import WatchedJob, run_watchdog
from tests.support.jobs import emf_documents
from tests.support.lambda_context import FakeLambdaContext

MONTHLY = WatchedJob("monthly_job", "cron(0 4 2 * ? *)", "UTC", 31 * DAY, "beatless-monthly")
WEEKLY = WatchedJob("weekly_job", "cron(0 6 ? * MON *)", "UTC", 7 * DAY, "beatless-weekly")


@pytest.fixture
def schedules(aws_inprocess: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[WatchedJob]]:
    """Both jobs' schedules exist in Scheduler (created now) and WATCHED_JOBS lists them."""
    scheduler = boto3.client("scheduler")
    for job in (MONTHLY, WEEKLY):
        scheduler.create_schedule(
            Name=job.schedule_name,
            ScheduleExpression=job.schedule,
            FlexibleTimeWindow={"Mode": "OFF"},
            Target={
                "Arn": f"arn:aws:lambda:us-east-1:123456789012:function:{job.name}",
                "RoleArn": "arn:aws:iam::123456789012:role/scheduler",
            },
        )
    monkeypatch.setenv("WATCHED_JOBS", json.dumps([MONTHLY.as_dict(), WEEKLY.as_dict()]))
    yield [MONTHLY, WEEKLY]


def published(name: str) -> list[tuple[str, float]]:
    """(Job dimension, value) of every datapoint of `name` in Beatless/Jobs, in the last 100 days
    and the next 100 (the tests judge at injected times)."""
    now = datetime.now(UTC)
    cloudwatch = boto3.client("cloudwatch")
    found = []
    for listed in cloudwatch.list_metrics(Namespace=metrics.JOBS_NAMESPACE, MetricName=name)["Metrics"]:
        stats = cloudwatch.get_metric_statistics(
            Namespace=metrics.JOBS_NAMESPACE,
            MetricName=name,
            Dimensions=listed["Dimensions"],
            StartTime=now - timedelta(days=100),
            EndTime=now + timedelta(days=100),
            Period=60,
            Statistics=["Maximum"],
        )
        job = {d["Name"]: d["Value"] for d in listed["Dimensions"]}[metrics.JOB_DIMENSION]
        found += [(job, point["Maximum"]) for point in stats["Datapoints"]]
    return sorted(found)


def succeed(job: WatchedJob, at: datetime) -> None:
    boto3.client("cloudwatch").put_metric_data(
        Namespace=metrics.JOBS_NAMESPACE,
        MetricData=[
            {
                "MetricName": metrics.JOB_SUCCEEDED,
                "Dimensions": [{"Name": metrics.JOB_DIMENSION, "Value": job.name}],
                "Timestamp": at,
                "Value": 1.0,
                "Unit": "Count",
            }
        ],
    )


def test_a_missed_fire_is_published_as_overdue_and_a_success_after_it_is_not(
    schedules: list[WatchedJob],
) -> None:
    created = datetime.now(UTC)
    # Both jobs have had a due fire since they were created, whatever the day: the longest gap to a
    # monthly fire (31 days) plus its grace (half a period) is under 50 days.
    later = created + timedelta(days=50)
    monthly_due = MONTHLY.expected_since(later, created)
    weekly_due = WEEKLY.expected_since(later, created)
    assert monthly_due is not None and weekly_due is not None
    succeed(MONTHLY, monthly_due + timedelta(minutes=3))
    succeed(WEEKLY, weekly_due - timedelta(hours=1))  # before its due fire: does not count
    run = run_watchdog(
        schedules,
        cloudwatch=client("cloudwatch"),
        scheduler=client("scheduler"),
        now=lambda: later,
    )
    verdicts = {v.job: v for v in run.verdicts}
    assert not verdicts["monthly_job"].overdue
    assert verdicts["weekly_job"].overdue
    assert published(metrics.JOB_OVERDUE) == [("monthly_job", 0.0), ("weekly_job", 1.0)]
    assert published(metrics.JOB_SUCCEEDED) == [("monthly_job", 1.0), ("weekly_job", 1.0)]  # ours only


def test_a_disabled_schedule_is_not_overdue(schedules: list[WatchedJob]) -> None:
    scheduler = boto3.client("scheduler")
    current = scheduler.get_schedule(Name=WEEKLY.schedule_name)
    scheduler.update_schedule(
        Name=WEEKLY.schedule_name,
        ScheduleExpression=current["ScheduleExpression"],
        FlexibleTimeWindow=current["FlexibleTimeWindow"],
        Target=current["Target"],
        State="DISABLED",
    )
    run = run_watchdog(
        schedules,
        cloudwatch=client("cloudwatch"),
        scheduler=client("scheduler"),
        now=lambda: datetime.now(UTC) + timedelta(days=50),  # a monthly fire is due whatever the day
    )
    assert {v.job: v.overdue for v in run.verdicts} == {"monthly_job": True, "weekly_job": False}


def test_a_run_publishes_a_verdict_per_job_and_prints_its_own_success(
    schedules: list[WatchedJob], capsys: pytest.CaptureFixture[str]
) -> None:
    result = job_watchdog.handler({}, FakeLambdaContext(remaining_ms=60_000))
    # Just deployed: nothing is due yet.
    assert result["checked"] == 2 and result["overdue"] == [] and result["published"] is True
    assert published(metrics.JOB_OVERDUE) == [("monthly_job", 0.0), ("weekly_job", 0.0)]
    assert published(metrics.JOB_SUCCEEDED) == []  # not to CloudWatch directly: ...
    (document,) = emf_documents(capsys.readouterr().out)  # ... the runtime's EMF line
    assert document["Job"] == "job_watchdog" and document["JobSucceeded"] == [1.0]
    assert "Remaining" not in document  # a watchdog has no backlog


def test_a_dry_run_judges_and_publishes_nothing(
    schedules: list[WatchedJob], capsys: pytest.CaptureFixture[str]
) -> None:
    result = job_watchdog.handler({"dry_run": True}, FakeLambdaContext(remaining_ms=60_000))
    assert result["checked"] == 2 and result["published"] is False
    assert published(metrics.JOB_OVERDUE) == published(metrics.JOB_SUCCEEDED) == []
    assert emf_documents(capsys.readouterr().out) == []


def test_a_missing_schedule_raises_and_publishes_nothing(
    schedules: list[WatchedJob], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ghost = WatchedJob("ghost_job", "cron(0 4 2 * ? *)", "UTC", 31 * DAY, "no-such-schedule")
    monkeypatch.setenv("WATCHED_JOBS", json.dumps([MONTHLY.as_dict(), ghost.as_dict()]))
    with pytest.raises(ClientError, match="ResourceNotFound"):
        job_watchdog.handler({}, FakeLambdaContext(remaining_ms=60_000))
    # The alarms then see no verdict at all, which they treat as breaching.
    assert published(metrics.JOB_OVERDUE) == published(metrics.JOB_SUCCEEDED) == []
    assert emf_documents(capsys.readouterr().out) == []


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ("not json", "WATCHED_JOBS"),
        (json.dumps([{**MONTHLY.as_dict(), "period_seconds": 0}]), "WATCHED_JOBS[0].period_seconds"),
        (json.dumps([{**MONTHLY.as_dict(), "schedule": "cron(0 4 L W * ? *)"}]), "monthly_job"),
    ],
)
def test_a_malformed_watch_list_names_the_field_and_publishes_nothing(
    env: str, field: str, schedules: list[WatchedJob], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHED_JOBS", env)
    with pytest.raises(InvalidInputError) as raised:
        job_watchdog.handler({}, FakeLambdaContext(remaining_ms=60_000))
    assert raised.value.field == field
    assert published(metrics.JOB_OVERDUE) == published(metrics.JOB_SUCCEEDED) == []
