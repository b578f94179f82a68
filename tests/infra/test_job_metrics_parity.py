"""Missed-run alarm <-> publisher parity: each alarm on Beatless/Jobs must read
exactly the metric (name, namespace, dimension set) the jobs really publish.

An extra EMF dimension (Powertools adds `service` when asked) or a renamed
metric would leave an alarm reading nothing, which with missing data treated
as breaching means a permanent false alarm; so the real publishers run here.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from typing import Any

import pytest

import worker_monitor
from beatless import metrics
from beatless.jobs import Need
from beatless.jobs.resources import reset_resources
from beatless.monitor.settings import ENVIRONMENT as MONITOR_ENVIRONMENT
from beatless.queues.connection import BROKER_ENVIRONMENT
from tests.support.lambda_context import FakeLambdaContext

pytestmark = pytest.mark.slow


def _emf(stdout: str) -> list[dict[str, Any]]:
    """The EMF documents among the lines a Lambda printed."""
    documents = []
    for line in stdout.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            documents.append(json.loads(line))
    return documents


def _published(documents: list[dict[str, Any]]) -> set[tuple[str, str, tuple[str, ...], str]]:
    """(namespace, metric, dimension names, Job value) of every metric in the documents."""
    found = set()
    for document in documents:
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:
                for metric in directive["Metrics"]:
                    found.add(
                        (
                            directive["Namespace"],
                            metric["Name"],
                            tuple(dimension_set),
                            document.get(metrics.JOB_DIMENSION, ""),
                        )
                    )
    return found


def _alarm_reads(synth: Any, name: str) -> tuple[str, str, tuple[str, ...], str]:
    alarm = synth.properties(synth.stacks.jobs.jobs[name].missed_run_alarm)
    dimensions = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
    return (alarm["Namespace"], alarm["MetricName"], tuple(dimensions), dimensions[metrics.JOB_DIMENSION])


def test_worker_monitor_publishes_the_success_its_missed_run_alarm_reads(
    synth: Any, redis_url: str, aws_inprocess: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (*MONITOR_ENVIRONMENT, *BROKER_ENVIRONMENT):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BROKER_URL", redis_url)
    monkeypatch.setenv("QUEUES", "default")
    # Powertools would add a `service` dimension from this; the alarm must still match.
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "beatless")
    reset_resources()
    out = io.StringIO()
    try:
        with redirect_stdout(out):
            worker_monitor.handler({"samples": 1}, FakeLambdaContext(remaining_ms=60_000))
    finally:
        reset_resources()
    assert _alarm_reads(synth, "worker_monitor") in _published(_emf(out.getvalue()))


def test_the_database_jobs_runtime_publishes_the_success_their_alarms_read(
    synth: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beatless.jobs.runtime import publish_job_metrics

    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "beatless")
    database_jobs = [job for job in synth.config.jobs if Need.DATABASE in job.needs]
    assert database_jobs
    for job in database_jobs:
        out = io.StringIO()
        with redirect_stdout(out):
            publish_job_metrics(job.name, {"examined": 3}, succeeded=True)
        reads = _alarm_reads(synth, job.name)
        if reads[1] == metrics.JOB_SUCCEEDED:
            assert reads in _published(_emf(out.getvalue())), job.name
        else:  # judged by the watchdog, which reads JobSucceeded with exactly these dimensions
            assert reads[1] == metrics.JOB_OVERDUE
            assert (metrics.JOBS_NAMESPACE, metrics.JOB_SUCCEEDED, (metrics.JOB_DIMENSION,), job.name) in (
                _published(_emf(out.getvalue()))
            )
