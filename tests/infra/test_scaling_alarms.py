"""The worker service's autoscaling as synthesized: capacity, step policies,
scale-out/scale-in/heartbeat alarms, alarm <-> metric parity with what the
monitor publishes, and the scaling activity on the workers' dashboard."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from beatless import metrics
from beatless.jobs import job
from beatless.queues.scaling import ScalingParameters
from tests.infra.conftest import render

pytestmark = pytest.mark.slow

# What the monitor and the workers publish in our namespace: metric -> dimension names.
PUBLISHED: dict[str, frozenset[str]] = {
    metrics.PENDING_TASKS: frozenset({metrics.QUEUE_DIMENSION}),
    metrics.RESERVED_TASKS: frozenset({metrics.QUEUE_DIMENSION}),
    metrics.BACKLOG_PER_TASK: frozenset({metrics.QUEUE_DIMENSION}),
    metrics.RUNNING_TASKS: frozenset(),
    metrics.DESIRED_TASKS: frozenset(),
    metrics.MONITOR_HEARTBEAT: frozenset(),
    metrics.MONITOR_ERRORS: frozenset(),
    metrics.TASK_PROTECTED: frozenset({metrics.TASK_ID_DIMENSION}),
    metrics.PROTECTION_FAILURES: frozenset({metrics.REASON_DIMENSION}),
}


def _alarm(synth: Any, alarm: Any) -> dict[str, Any]:
    return synth.properties(alarm)  # type: ignore[no-any-return]


def _metric_stats(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    """Every metric an alarm reads, as {Namespace, MetricName, Dimensions, Stat, Period}."""
    if "Metrics" in alarm:
        return [
            {
                **query["MetricStat"]["Metric"],
                "Stat": query["MetricStat"]["Stat"],
                "Period": query["MetricStat"]["Period"],
            }
            for query in alarm["Metrics"]
            if "MetricStat" in query
        ]
    return [
        {
            "Namespace": alarm["Namespace"],
            "MetricName": alarm["MetricName"],
            "Dimensions": alarm.get("Dimensions", []),
            "Stat": alarm.get("Statistic"),
            "Period": alarm["Period"],
        }
    ]


def _expression(alarm: dict[str, Any]) -> str:
    (expression,) = [
        q["Expression"] for q in alarm["Metrics"] if q.get("ReturnData", True) and "Expression" in q
    ]
    return str(expression)


def test_capacity_starts_at_zero_and_is_bounded(synth: Any, synth_variant: Any) -> None:
    target = synth.only("AWS::ApplicationAutoScaling::ScalableTarget")
    assert target["MinCapacity"] == 0
    assert target["MaxCapacity"] == ScalingParameters().max_tasks
    assert target["ScalableDimension"] == "ecs:service:DesiredCount"
    assert synth_variant.only("AWS::ApplicationAutoScaling::ScalableTarget")["MaxCapacity"] == 25


def test_scale_out_alarm_reacts_to_a_single_pending_task_within_10_seconds(synth: Any) -> None:
    params = synth.config.worker.scaling
    alarm = _alarm(synth, synth.stacks.worker.scaling.scale_out_alarm)
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["Threshold"] == 1  # one pending task is enough, from zero tasks too
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (1, 1)
    assert alarm["TreatMissingData"] == "notBreaching"
    stats = _metric_stats(alarm)
    assert {s["Period"] for s in stats} == {10} == {params.scale_out_period_seconds}
    assert {s["MetricName"] for s in stats} == {metrics.PENDING_TASKS}
    assert {s["Stat"] for s in stats} == {"Maximum"}
    queues = {d["Value"] for s in stats for d in s["Dimensions"]}
    assert queues == set(synth.config.worker.queues)
    ids = {q["Id"] for q in alarm["Metrics"] if "MetricStat" in q}
    assert re.fullmatch(r"SUM\(\[(.+)\]\)", _expression(alarm))
    assert set(re.fullmatch(r"SUM\(\[(.+)\]\)", _expression(alarm))[1].split(", ")) == ids  # type: ignore[index]


def test_scale_out_steps_are_the_parameters_steps(synth: Any) -> None:
    params = synth.config.worker.scaling
    alarm = _alarm(synth, synth.stacks.worker.scaling.scale_out_alarm)
    policy_id = synth.logical_id(synth.stacks.worker.scaling.scale_out)
    assert alarm["AlarmActions"] == [{"Ref": policy_id}]
    policy = synth.properties(synth.stacks.worker.scaling.scale_out)
    assert policy["PolicyType"] == "StepScaling"
    config = policy["StepScalingPolicyConfiguration"]
    assert config["AdjustmentType"] == "ChangeInCapacity"
    assert config["Cooldown"] == params.scale_out_cooldown_seconds
    assert config["MetricAggregationType"] == "Maximum"
    # Bounds are relative to the threshold: pending >= threshold + lower.
    got = [
        (alarm["Threshold"] + s["MetricIntervalLowerBound"], s["ScalingAdjustment"])
        for s in config["StepAdjustments"]
    ]
    assert got == [(step.pending_at_least, step.add_tasks) for step in params.scale_out_steps]
    uppers = [s.get("MetricIntervalUpperBound") for s in config["StepAdjustments"]]
    lowers = [s["MetricIntervalLowerBound"] for s in config["StepAdjustments"]]
    assert uppers[:-1] == lowers[1:] and uppers[-1] is None  # contiguous, open-ended


def test_scale_in_needs_pending_and_reserved_both_zero_for_the_idle_window(
    synth: Any, synth_variant: Any
) -> None:
    params = synth.config.worker.scaling
    alarm = _alarm(synth, synth.stacks.worker.scaling.scale_in_alarm)
    assert alarm["ComparisonOperator"] == "LessThanOrEqualToThreshold"
    assert alarm["Threshold"] == 0
    assert alarm["TreatMissingData"] == "notBreaching"  # no data never scales in
    stats = _metric_stats(alarm)
    assert {s["MetricName"] for s in stats} == {metrics.PENDING_TASKS, metrics.RESERVED_TASKS}
    assert {s["Stat"] for s in stats} == {"Maximum"}  # one busy reading blocks the period
    for name in (metrics.PENDING_TASKS, metrics.RESERVED_TASKS):
        queues = {d["Value"] for s in stats if s["MetricName"] == name for d in s["Dimensions"]}
        assert queues == set(synth.config.worker.queues)
    ids = {q["Id"] for q in alarm["Metrics"] if "MetricStat" in q}
    assert set(re.fullmatch(r"SUM\(\[(.+)\]\)", _expression(alarm))[1].split(", ")) == ids  # type: ignore[index]
    (period,) = {s["Period"] for s in stats}
    assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"]
    assert period * alarm["EvaluationPeriods"] == params.scale_in_idle_seconds == 300

    policy_id = synth.logical_id(synth.stacks.worker.scaling.scale_in)
    assert alarm["AlarmActions"] == [{"Ref": policy_id}]
    config = synth.properties(synth.stacks.worker.scaling.scale_in)["StepScalingPolicyConfiguration"]
    assert config["AdjustmentType"] == "ExactCapacity"
    assert config["StepAdjustments"] == [{"MetricIntervalUpperBound": 0, "ScalingAdjustment": 0}]

    variant = _alarm(synth_variant, synth_variant.stacks.worker.scaling.scale_in_alarm)
    assert variant["EvaluationPeriods"] * _metric_stats(variant)[0]["Period"] == 600


def test_stale_heartbeat_alarm_treats_silence_as_breaching_and_notifies(synth: Any) -> None:
    params = synth.config.worker.scaling
    alarm = _alarm(synth, synth.stacks.monitoring.monitor_health.heartbeat_alarm)
    assert alarm["MetricName"] == metrics.MONITOR_HEARTBEAT
    assert alarm["Namespace"] == synth.config.metrics_namespace
    assert "Dimensions" not in alarm
    assert alarm["TreatMissingData"] == "breaching"
    assert (alarm["ComparisonOperator"], alarm["Threshold"], alarm["Statistic"]) == (
        "LessThanThreshold",
        1,
        "Sum",
    )
    assert alarm["Period"] * alarm["EvaluationPeriods"] == params.heartbeat_stale_seconds
    topic = {"Ref": synth.logical_id(synth.stacks.monitoring.alarms.topic)}
    assert alarm["AlarmActions"] == [topic] and alarm["OKActions"] == [topic]


def test_every_alarm_on_our_namespace_reads_a_metric_the_monitor_or_workers_publish(synth: Any) -> None:
    """Alarm <-> metric parity: a renamed metric or dimension would leave an alarm reading nothing."""
    queues = set(synth.config.worker.queues)
    checked = 0
    for alarm in synth.resources("AWS::CloudWatch::Alarm").values():
        for stat in _metric_stats(alarm):
            if stat["Namespace"].startswith("AWS/") or stat["Namespace"] == metrics.JOBS_NAMESPACE:
                continue  # the jobs' own alarms: tests/infra/test_scheduled_jobs.py
            if stat["Namespace"] == synth.config.graph.metrics_namespace:
                continue  # the graph node group's scale-out: tests/infra/test_graph_stack.py
            assert stat["Namespace"] == synth.config.metrics_namespace == metrics.DEFAULT_NAMESPACE
            assert stat["MetricName"] in PUBLISHED, stat
            dimensions = {d["Name"]: d["Value"] for d in stat["Dimensions"]}
            assert set(dimensions) == PUBLISHED[stat["MetricName"]], stat
            if metrics.QUEUE_DIMENSION in dimensions:
                assert dimensions[metrics.QUEUE_DIMENSION] in queues
            checked += 1
    # scale-out 3 queues + scale-in 2 x 3 queues + heartbeat
    assert checked == 3 * len(queues) + 1


def test_worst_case_time_to_a_scale_out_decision_is_within_30_seconds(synth: Any) -> None:
    """Read from the templates: the monitor's sampling interval + period x datapoints."""
    monitor = synth.stacks.jobs.jobs["worker_monitor"].function
    env = synth.properties(monitor)["Environment"]
    interval = int(env["Variables"]["SAMPLE_INTERVAL_SECONDS"])
    assert interval == int(job("worker_monitor").environment["SAMPLE_INTERVAL_SECONDS"])
    alarm = _alarm(synth, synth.stacks.worker.scaling.scale_out_alarm)
    period = _metric_stats(alarm)[0]["Period"]
    worst = interval + period * alarm["DatapointsToAlarm"]
    assert worst == synth.config.worker.scaling.worst_case_scale_out_seconds(interval)
    assert worst <= 30


def test_dashboard_shows_scaling_activity_the_alarms_and_desired_vs_running_tasks(synth: Any) -> None:
    """The scale-out and scale-in alarms themselves (by ARN: their state, and their metric against
    the threshold), and the desired vs running task counts the monitor publishes, on one graph."""
    worker = synth.stacks.worker
    scaling = worker.scaling
    out_id, in_id = synth.logical_id(scaling.scale_out_alarm), synth.logical_id(scaling.scale_in_alarm)
    dashboard = synth.properties(worker.dashboard.dashboard)
    # Each alarm's {"Fn::GetAtt": [id, "Arn"]} rendered as a stand-in naming it.
    body = json.loads(render(dashboard["DashboardBody"], {out_id: "arn:scale-out", in_id: "arn:scale-in"}))
    parts = dashboard["DashboardBody"]["Fn::Join"][1]
    for logical_id in (out_id, in_id):
        assert {"Fn::GetAtt": [logical_id, "Arn"]} in parts, logical_id
    widgets = {w["properties"].get("title"): w for w in body["widgets"]}

    (status,) = [w for w in body["widgets"] if w["type"] == "alarm"]
    assert status["properties"]["alarms"] == ["arn:scale-out", "arn:scale-in"]
    shown = [
        w["properties"]["annotations"]["alarms"]
        for w in body["widgets"]
        if w["type"] == "metric" and "alarms" in w["properties"].get("annotations", {})
    ]
    assert shown == [["arn:scale-out"], ["arn:scale-in"]]

    namespace = synth.config.metrics_namespace
    graph = widgets["Desired vs running tasks"]["properties"]
    # Dimensionless, as published, at the monitor's 10 s resolution: each step moves DesiredTasks.
    for name in (metrics.DESIRED_TASKS, metrics.RUNNING_TASKS):
        assert [namespace, name, {"period": 10, "stat": "Maximum"}] in graph["metrics"], name
    assert graph["annotations"]["horizontal"] == [
        {"value": synth.config.worker.scaling.max_tasks, "label": "max tasks", "yAxis": "left"}
    ]
    # In the alarms' own stack, so it imports nothing (test_the_stacks_still_refer_only_down: no cycle).
    assert "Fn::ImportValue" not in json.dumps(dashboard)
