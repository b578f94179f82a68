"""`beatless cost`: the month's fires from the registry, each line priced at list and after
the free tier, totals that are the sums of their lines, the always-on alternative, the goals
judged on the figures, and measurements from a local run used where they exist."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from beatless.cli import main
from beatless.cost.prices import LIST
from beatless.cost.report import (
    HOURS_PER_MONTH,
    OBSERVABILITY,
    SCHEDULES,
    WORKERS,
    Assumptions,
    build,
    measured,
    monitor_runs,
    monitor_seconds,
    render,
)
from beatless.jobs import JOBS, job


def test_fires_are_the_registry_schedules_over_a_30_day_month() -> None:
    report = build(JOBS)
    assert report.fires["worker_monitor"] == 30 * 24 * 60
    assert report.fires["credit_reservation_cleanup"] == 30 * 24 * 4
    assert report.fires["ingestion_queue_processor"] == 30 * 24 * 12
    assert report.fires["kuzu_instance_monitor"] == 30 * 24 * 12 + 30 * 24 + 30  # its three schedules
    assert report.fires["shared_credit_allocation"] == report.fires["graph_credit_allocation"] == 1
    lines = {line.item: line for line in report.lines}
    assert lines["EventBridge Scheduler invocations"].quantity == sum(report.fires.values())


def test_lines_add_up_and_the_free_tier_only_lowers_them() -> None:
    report = build(JOBS)
    for part in (SCHEDULES, OBSERVABILITY, WORKERS):
        assert report.total(part) == pytest.approx(sum(x.list_usd for x in report.lines if x.part == part))
    assert all(0 <= line.free_usd <= line.list_usd for line in report.lines)
    assert report.total() == pytest.approx(sum(report.total(p) for p in (SCHEDULES, OBSERVABILITY, WORKERS)))
    beat = report.always_on[0]
    assert beat.list_usd == pytest.approx(
        HOURS_PER_MONTH * (0.25 * LIST.fargate_per_vcpu_hour + 0.5 * LIST.fargate_per_gb_hour), abs=1e-3
    )
    assert report.ratio() == pytest.approx(
        report.always_on_total() / (report.total(SCHEDULES) + report.total(WORKERS))
    )


def test_the_monitor_is_billed_for_its_sampling_window_when_active_and_one_reading_when_idle() -> None:
    monitor = job("worker_monitor")
    assert monitor_seconds(monitor) == 51.0  # 6 readings 10 s apart, then the last one's work
    assert monitor_seconds(monitor, idle=True) == 1.0  # IDLE_SAMPLES = 1
    a = Assumptions(job_seconds=0.0, worker_hours=30.0, bursts=300)
    report = build(JOBS, a)
    minutes = 30 * 24 * 60
    active = 30 * 60 + 300 * 5  # busy worker minutes, and each burst's scale-in window
    runs = monitor_runs(monitor, minutes, a)
    assert (runs.active, runs.idle, runs.woken) == (active, minutes - active, 300)
    lines = {line.item: line.quantity for line in report.lines}
    full_grid = (active + 300) * 51.0  # the woken runs sample the grid too
    assert lines["Lambda compute (every job)"] == pytest.approx(
        (full_grid + (minutes - active) * 1.0) * monitor.memory_mb / 1024, abs=0.1
    )
    assert lines["scaling signal: PutMetricData"] == (active + 300) * 6 + (minutes - active)
    # Without IDLE_SAMPLES the monitor samples every minute in full, and nobody wakes it.
    always = dataclasses.replace(monitor, environment={"SAMPLES": "6", "SAMPLE_INTERVAL_SECONDS": "10"})
    jobs = tuple(always if j is monitor else j for j in JOBS)
    lines = {line.item: line.quantity for line in build(jobs, a).lines}
    assert lines["Lambda compute (every job)"] == pytest.approx(
        minutes * 51.0 * monitor.memory_mb / 1024, abs=0.1
    )
    assert lines["scaling signal: PutMetricData"] == minutes * 6


def test_measurements_of_a_local_run_replace_the_assumptions_they_cover() -> None:
    summary = {
        "scheduled_median_ms": {"auth_cleanup": 20.0},
        "scheduled_metrics_per_job": {"auth_cleanup": 2},
        "cloudwatch_metrics": {"Beatless/Graph": 17},
    }
    assumptions = measured(summary, Assumptions(job_seconds=1.0, metrics_per_job=6))
    assert assumptions.seconds_by_job == {"auth_cleanup": 0.02} and assumptions.graph_metrics == 17
    report = build(JOBS, assumptions)
    metrics = {line.item: line.quantity for line in report.lines}
    assert metrics["job metrics"] == 2 + 6 * (len(JOBS) - 1)
    assert metrics["graph plane metrics"] == 17


def test_the_report_says_where_when_and_whether_the_goals_are_met() -> None:
    report = build(JOBS)
    text = render(report)
    assert "us-east-1" in text and "list prices of 2025" in text and "aws.amazon.com/lambda/pricing" in text
    signal_goal = next(line for line in text.splitlines() if line.startswith("goal: schedules"))
    assert ("(met)" in signal_goal) is (report.total(SCHEDULES) <= 10)
    assert ("(MISSED)" in signal_goal) is (report.total(SCHEDULES) > 10)
    ratio_goal = next(line for line in text.splitlines() if line.startswith("goal: >= 10x"))
    assert ratio_goal.startswith(f"goal: >= 10x cheaper than always-on: {report.ratio():.1f}x")
    cheap = build(JOBS, Assumptions(worker_hours=0.0, metrics_per_job=0, job_seconds=0.0, dashboards=0))
    assert cheap.total() < report.total()


def test_the_cli_prints_the_report_and_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cost", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["region"] == "us-east-1" and data["total_list_usd"] > 0
    summary = tmp_path / "run.json"
    summary.write_text(json.dumps({"scheduled_median_ms": {"auth_cleanup": 5}}))
    assert main(["cost", "--measured", str(summary)]) == 0
    with pytest.raises(SystemExit):
        main(["cost", "--worker-hours", "-1"])
    assert "--worker-hours" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["cost", "--measured", str(tmp_path / "missing.json")])
    assert "--measured" in capsys.readouterr().err
