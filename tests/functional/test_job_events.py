"""Every registry job, through its real entry point, with what its needs give it here
(`tests.support.needs`: PostgreSQL with work waiting, Redis, AWS in moto):

- every console test event in `events/<job>/` runs — a job that mutates runs it as a
  dry run and changes nothing — and says which time it ran as of;
- every job rejects the same list of malformed events naming the field, having read,
  changed and published nothing;
- no job acts on a time later than its clock: an event two hours ahead runs as of now.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from beatless.errors import InvalidInputError
from beatless.graphs import monitor as graph_monitor
from beatless.jobs import JOBS, Job, JobClock, Need
from beatless.timestamps import iso_z
from tests.support.lambda_context import FakeLambdaContext
from tests.support.needs import JobEnvironment

EVENTS = Path(__file__).resolve().parents[2] / "events"
CONSOLE_EVENTS = [(job, path) for job in JOBS for path in sorted((EVENTS / job.name).glob("*.json"))]

# What a console user or a broken template can send; every job must refuse each, naming the field.
MALFORMED: list[tuple[Any, str]] = [
    ({"scheduled_time": "2026-11-23T09:15:00"}, "scheduled_time"),  # no time zone
    ({"scheduled_time": "2026-11-23 09:15"}, "scheduled_time"),
    ({"scheduled_time": "2026-11-23"}, "scheduled_time"),  # a date, without time and zone
    ({"scheduled_time": "soon"}, "scheduled_time"),
    ({"scheduled_time": 1763889300}, "scheduled_time"),
    ({"scheduled_time": ["2026-11-23T09:15:00Z"]}, "scheduled_time"),
    ({"dry_run": "yes"}, "dry_run"),
    ({"dry_run": 1}, "dry_run"),
    ({"scheduled_time": None, "dry_run": None}, "dry_run"),
    ({"attempt_number": "0"}, "attempt_number"),
    ({"attempt_number": 0}, "attempt_number"),
    ({"attempt_number": -1}, "attempt_number"),
    ({"attempt_number": True}, "attempt_number"),
    ({"attempt_number": "one"}, "attempt_number"),
    ({"execution_id": 7}, "execution_id"),
    ({"execution_id": ["x"]}, "execution_id"),
    ({"chunk_size": 10}, "chunk_size"),
    ({"scheduled_time": "2026-11-23T09:15:00Z", "extra": True}, "extra"),
    ("scheduled", "event"),
    (42, "event"),
    (3.5, "event"),
    ([{"scheduled_time": "2026-11-23T09:15:00Z"}], "event"),
]


# What the graph monitor publishes (to its namespace), dry run or not.
GRAPH_METRICS = {
    graph_monitor.AVAILABLE_SLOTS, graph_monitor.USED_SLOTS, graph_monitor.TOTAL_CAPACITY,
    graph_monitor.HEALTHY_INSTANCES, graph_monitor.UNHEALTHY_INSTANCES, graph_monitor.INSTANCES_PAST_GRACE,
    graph_monitor.INSTANCE_DATABASE_COUNT, graph_monitor.INSTANCE_UTILIZATION, graph_monitor.GRAPHS_REMOVED,
    graph_monitor.MONITOR_ERRORS,
}  # fmt: skip


def handler(job: Job) -> Any:
    return importlib.import_module(job.name).handler


def scheduled(job: Job, event: Any) -> Any:
    """`event` as the job's (first) schedule sends it: with that schedule's input."""
    return {**job.schedule.input, **event} if isinstance(event, dict) else event


@pytest.fixture
def environment(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, postgres_server: Any
) -> Iterator[JobEnvironment]:
    yield JobEnvironment(request, monkeypatch, postgres_server)


def test_every_job_has_console_events() -> None:
    for job in JOBS:
        names = {p.name for p in (EVENTS / job.name).glob("*.json")}
        assert {"scheduled_tick.json", "minimal.json"} <= names, job.name
        assert ("dry_run.json" in names) is job.accepts_dry_run, job.name


@pytest.mark.parametrize(
    ("job", "path"), CONSOLE_EVENTS, ids=lambda v: getattr(v, "name", getattr(v, "stem", v))
)
def test_every_console_event_runs(
    job: Job, path: Path, environment: JobEnvironment, capsys: pytest.CaptureFixture[str]
) -> None:
    environment.prepare(job)
    event = json.loads(path.read_text())
    if job.mutating:
        event["dry_run"] = True  # whatever the event says, this test must change nothing
    before = environment.observe()

    summary = handler(job)(event, FakeLambdaContext(remaining_ms=job.timeout_seconds * 1000))

    assert summary["job"] == job.name
    assert summary["dry_run"] is event.get("dry_run", False)
    assert summary["clamped"] is False  # past events, and "now" when the event names no time
    if "scheduled_time" in event:
        assert summary["scheduled_time"] == event["scheduled_time"]
        assert summary["as_of"] == event["scheduled_time"]  # console events are in the past
    json.dumps(summary)  # what the console shows
    after = environment.observe(capsys.readouterr().out)
    if job.mutating:
        assert after.database == before.database
        assert after.graph_registries == before.graph_registries
        assert after.broker_lists == before.broker_lists  # nothing enqueued
        assert after.s3_objects == before.s3_objects  # nothing deleted
        assert after.stdout_metrics == []  # a dry run publishes nothing of its own run
        if Need.GRAPH_METRICS in job.needs:  # ...but the graph monitor still publishes what it saw
            assert after.cloudwatch_metrics and set(after.cloudwatch_metrics) <= GRAPH_METRICS
        else:
            assert after.cloudwatch_metrics == []


@pytest.mark.parametrize("job", JOBS, ids=lambda j: j.name)
def test_malformed_events_are_rejected_naming_the_field_and_change_nothing(
    job: Job, environment: JobEnvironment, capsys: pytest.CaptureFixture[str]
) -> None:
    environment.prepare(job)
    before = environment.observe()
    refused = [] if job.accepts_dry_run else [({"dry_run": True}, "dry_run")]  # it has no dry run
    for event, field in [*MALFORMED, *refused]:
        with pytest.raises(InvalidInputError) as info:
            handler(job)(scheduled(job, event), FakeLambdaContext())
        assert (info.value.field, field in str(info.value)) == (field, True), event
    after = environment.observe(capsys.readouterr().out)
    assert after.database == before.database
    assert after.graph_registries == before.graph_registries
    assert after.broker_lists == before.broker_lists
    assert after.s3_objects == before.s3_objects
    assert after.cloudwatch_metrics == [] and after.stdout_metrics == []


@pytest.mark.parametrize("job", JOBS, ids=lambda j: j.name)
def test_no_job_acts_on_a_time_later_than_its_clock(job: Job, environment: JobEnvironment) -> None:
    environment.prepare(job)
    ahead = datetime.now(UTC) + timedelta(hours=2)  # a console mistake
    event: dict[str, Any] = scheduled(job, {"scheduled_time": iso_z(ahead)})
    if job.accepts_dry_run:
        event["dry_run"] = True
    clock_before = _clock(job, environment)

    summary = handler(job)(event, FakeLambdaContext(remaining_ms=job.timeout_seconds * 1000))

    as_of = datetime.fromisoformat(summary["as_of"])
    assert clock_before <= as_of <= _clock(job, environment) < ahead
    assert summary["clamped"] is True and summary["scheduled_time"] == iso_z(ahead)
    start = datetime.fromisoformat(summary["period"]["start"])
    assert start <= as_of  # the business period is the clamped time's, never a future one


def _clock(job: Job, environment: JobEnvironment) -> datetime:
    if job.clock is JobClock.DATABASE:
        assert environment.conn is not None
        now: datetime = environment.conn.execute("SELECT statement_timestamp()").fetchone()[0]
        return now.astimezone(UTC)
    return datetime.now(UTC)
