"""What operators are told and shown: every job's Lambda throttles and every job's
dead-letter queue (its schedules' and rules') alarm to the alarm topic; the worker service's
CPU and memory alarm; the jobs' dashboard has a line for every job in each of its graphs,
its dead-letter queues' depth and the credits allocated and charged."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.slow


def _alarms(synth: Any, stack: Any) -> list[dict[str, Any]]:
    return list(synth.resources("AWS::CloudWatch::Alarm", stack).values())


def test_every_job_alarms_on_throttles_and_on_its_dead_letter_queue(synth: Any) -> None:
    jobs = synth.stacks.jobs
    alarms = _alarms(synth, jobs)
    for name, built in jobs.jobs.items():
        queue = synth.logical_id(built.dead_letter_queue)
        (dlq,) = [a for a in alarms if a.get("MetricName") == "ApproximateNumberOfMessagesVisible"
                  and a["Dimensions"][0]["Value"] == {"Fn::GetAtt": [queue, "QueueName"]}]  # fmt: skip
        assert (dlq["Threshold"], dlq["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold"), name
        function = synth.logical_id(built.function)
        (throttles,) = [a for a in alarms if a.get("MetricName") == "Throttles"
                        and a["Dimensions"][0]["Value"] == {"Ref": function}]  # fmt: skip
        (errors,) = [a for a in alarms if a.get("MetricName") == "Errors"
                     and a["Dimensions"][0]["Value"] == {"Ref": function}]  # fmt: skip
        for alarm in (dlq, throttles):
            assert alarm["AlarmActions"] == errors["AlarmActions"] != []  # the alarm topic
            assert alarm["TreatMissingData"] == "notBreaching"


def test_the_worker_service_alarms_on_cpu_and_memory(synth: Any) -> None:
    alarms = {
        a["MetricName"]: a for a in _alarms(synth, synth.stacks.worker) if a.get("Namespace") == "AWS/ECS"
    }
    assert set(alarms) == {"CPUUtilization", "MemoryUtilization"}
    for alarm in alarms.values():
        assert alarm["Threshold"] == 90 and alarm["EvaluationPeriods"] == 3 and alarm["AlarmActions"]


def test_the_jobs_dashboard_shows_every_job_its_queues_and_the_credits(synth: Any) -> None:
    jobs = synth.stacks.jobs
    (dashboard,) = synth.resources("AWS::CloudWatch::Dashboard", jobs).values()
    parts = dashboard["DashboardBody"]["Fn::Join"][1]
    body = "".join(part if isinstance(part, str) else "<token>" for part in parts)
    for name in jobs.jobs:
        # successes, errors, duration, throttles and dead letters: one line each (and credits)
        credits = name.endswith("credit_allocation") or name == "storage_billing"
        assert body.count(f'"label":"{name}"') == 5 + credits, name
    assert "ApproximateNumberOfMessagesVisible" in body
    assert '"GrantedMicro","Job","graph_credit_allocation"' in body
    assert '"ChargedMicro","Job","storage_billing"' in body
