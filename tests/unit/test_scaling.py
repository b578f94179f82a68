"""What the scaling alarms and step policies decide, given the monitor's readings."""

from __future__ import annotations

import pytest

from beatless.errors import InvalidInputError
from beatless.queues.scaling import (
    Decision,
    Reading,
    ScaleOutStep,
    ScalingParameters,
    ScalingState,
    decide,
)

QUEUES = ("graph", "ingest", "default")
T0 = 1_800_000_000.0  # a minute boundary (divisible by 60)


def reading(at: float, pending: int = 0, reserved: int = 0, queue: str = "graph") -> Reading:
    """A successful reading: `pending`/`reserved` on `queue`, 0 on the others."""
    return Reading(
        at=at,
        pending={q: pending if q == queue else 0 for q in QUEUES},
        reserved={q: reserved if q == queue else 0 for q in QUEUES},
    )


def blind(at: float) -> Reading:
    """A reading that failed: Redis could not be read, nothing published."""
    return Reading(at=at, pending=None, reserved=None)


def every(seconds: float, start: float, end: float, pending: int = 0, reserved: int = 0) -> list[Reading]:
    out, t = [], start
    while t < end:
        out.append(reading(t, pending=pending, reserved=reserved))
        t += seconds
    return out


def run(params: ScalingParameters, readings: list[Reading], state: ScalingState, now: float) -> Decision:
    return decide(params, readings, state, now)


P = ScalingParameters()


def test_one_pending_task_starts_a_worker_from_zero_within_one_period() -> None:
    readings = [reading(T0 + 1, pending=1, queue="ingest")]
    # The reading's 10 s period [T0, T0+10) closes at T0+10.
    assert run(P, readings, ScalingState(desired=0), T0 + 9).action == "hold"
    decision = run(P, readings, ScalingState(desired=0), T0 + 10)
    assert (decision.action, decision.desired) == ("scale_out", 1)


def test_pending_is_summed_over_queues_before_the_steps_apply() -> None:
    r = Reading(at=T0 + 1, pending={"graph": 4, "ingest": 3, "default": 3}, reserved=dict.fromkeys(QUEUES, 0))
    decision = run(P, [r], ScalingState(desired=1), T0 + 10)
    assert decision.desired == 1 + 2  # 10 pending: the second step


@pytest.mark.parametrize(
    ("pending", "added"), [(1, 1), (9, 1), (10, 2), (49, 2), (50, 4), (199, 4), (200, 8), (5000, 8)]
)
def test_larger_backlogs_add_more_tasks(pending: int, added: int) -> None:
    decision = run(P, [reading(T0 + 1, pending=pending)], ScalingState(desired=1), T0 + 10)
    assert decision.desired == 1 + added


def test_cooldown_stops_re_invocations_from_adding_a_task_every_period() -> None:
    state = ScalingState(desired=0)
    readings = every(10, T0 + 1, T0 + 200, pending=3)
    desired = []
    for now in range(int(T0) + 10, int(T0) + 130, 10):
        decision = run(P, readings, state, now)
        state = decision.state
        desired.append(decision.desired)
    # +1 at once, then nothing for the 60 s cooldown although the alarm stays in ALARM,
    # then +1 again because tasks are still pending.
    assert desired[:6] == [1, 1, 1, 1, 1, 1]
    assert desired[6] == 2


def test_a_larger_step_during_cooldown_adds_only_the_difference() -> None:
    first = run(P, [reading(T0 + 1, pending=1)], ScalingState(desired=0), T0 + 10)
    assert first.desired == 1
    burst = [reading(T0 + 1, pending=1), reading(T0 + 11, pending=60)]
    second = run(P, burst, first.state, T0 + 20)
    # 60 pending is the +4 step; +1 is already under way.
    assert (second.action, second.desired) == ("scale_out", 4)


def test_scale_out_never_exceeds_max_tasks() -> None:
    params = ScalingParameters(max_tasks=3)
    decision = run(params, [reading(T0 + 1, pending=500)], ScalingState(desired=2), T0 + 10)
    assert decision.desired == 3
    at_max = run(params, [reading(T0 + 1, pending=500)], ScalingState(desired=3), T0 + 10)
    assert (at_max.action, at_max.desired) == ("hold", 3)


def test_scale_in_only_after_pending_and_reserved_are_zero_for_the_whole_window() -> None:
    idle = every(10, T0, T0 + 300)
    decision = run(P, idle, ScalingState(desired=4), T0 + 300)
    assert (decision.action, decision.desired) == ("scale_in", 0)
    # One minute short of the window: not yet.
    assert run(P, idle[6:], ScalingState(desired=4), T0 + 300).action == "hold"


def test_a_single_busy_reading_blocks_scale_in() -> None:
    for busy in (reading(T0 + 123, reserved=1, queue="default"), reading(T0 + 250, pending=1, queue="graph")):
        readings = [r for r in every(10, T0, T0 + 300) if r.at != busy.at] + [busy]
        decision = run(P, readings, ScalingState(desired=4), T0 + 300)
        assert decision.desired == 4, busy


def test_reserved_tasks_alone_keep_the_service_up() -> None:
    """A busy fleet with empty queues is not idle: running (acked-late) tasks are reserved."""
    busy = every(10, T0, T0 + 600, reserved=2)
    decision = run(P, busy, ScalingState(desired=2), T0 + 600)
    assert (decision.action, decision.desired) == ("hold", 2)


def test_missing_data_never_scales_in_and_marks_the_monitor_blind() -> None:
    for readings in ([], [blind(t) for t in range(int(T0), int(T0) + 600, 10)]):
        decision = run(P, readings, ScalingState(desired=3), T0 + 600)
        assert (decision.action, decision.desired) == ("hold", 3)
        assert decision.monitor_blind
    # One blind minute inside an otherwise idle window also prevents a scale-in.
    gap = [r for r in every(10, T0, T0 + 300) if not T0 + 120 <= r.at < T0 + 180]
    assert run(P, gap, ScalingState(desired=3), T0 + 300).desired == 3


def test_monitor_is_blind_only_after_the_heartbeat_window() -> None:
    readings = [reading(T0 + 5)]
    assert not run(P, readings, ScalingState(), T0 + 60).monitor_blind
    assert not run(P, readings, ScalingState(), T0 + 180).monitor_blind
    assert run(P, readings, ScalingState(), T0 + 240).monitor_blind


def test_scale_out_wins_over_a_stale_scale_in() -> None:
    readings = [*every(10, T0, T0 + 300), reading(T0 + 301, pending=1)]
    decision = run(P, readings, ScalingState(desired=0), T0 + 310)
    assert (decision.action, decision.desired) == ("scale_out", 1)


def test_worst_case_from_first_pending_task_to_decision() -> None:
    assert P.worst_case_scale_out_seconds(sample_interval_seconds=10) == 20
    slower = ScalingParameters(
        scale_out_period_seconds=30, scale_out_evaluation_periods=2, scale_out_datapoints_to_alarm=2
    )
    assert slower.worst_case_scale_out_seconds(10) == 70


def test_the_decision_function_reproduces_the_worst_case() -> None:
    """A task enqueued just after a reading at T0 is first seen at T0+10 and decided at T0+20."""
    readings = [reading(T0, pending=0), reading(T0 + 10, pending=1)]
    state = ScalingState(desired=0)
    first_scale_out = next(
        now for now in range(int(T0), int(T0) + 60) if run(P, readings, state, now).action == "scale_out"
    )
    assert first_scale_out - T0 == P.worst_case_scale_out_seconds(10)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"min_tasks": -1}, "min_tasks"),
        ({"max_tasks": 0}, "max_tasks"),
        ({"min_tasks": 5, "max_tasks": 4}, "max_tasks"),
        ({"scale_out_period_seconds": 15}, "scale_out_period_seconds"),
        ({"scale_in_period_seconds": 90}, "scale_in_period_seconds"),
        ({"scale_out_datapoints_to_alarm": 2}, "scale_out_datapoints_to_alarm"),
        ({"scale_out_evaluation_periods": 0}, "scale_out_evaluation_periods"),
        ({"scale_out_steps": ()}, "scale_out_steps"),
        ({"scale_out_steps": (ScaleOutStep(2, 1),)}, "scale_out_steps"),
        ({"scale_out_steps": (ScaleOutStep(1, 2), ScaleOutStep(5, 1))}, "scale_out_steps"),
        ({"scale_out_steps": (ScaleOutStep(1, 1), ScaleOutStep(1, 2))}, "scale_out_steps"),
        ({"scale_out_steps": (ScaleOutStep(1, 0),)}, "scale_out_steps"),
        ({"scale_out_cooldown_seconds": -1}, "scale_out_cooldown_seconds"),
        ({"scale_in_idle_seconds": 90}, "scale_in_idle_seconds"),
        ({"scale_in_idle_seconds": 30}, "scale_in_idle_seconds"),
        ({"heartbeat_stale_seconds": 100}, "heartbeat_stale_seconds"),
    ],
)
def test_bad_parameters_are_rejected_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as raised:
        ScalingParameters(**kwargs)  # type: ignore[arg-type]
    assert raised.value.field == field
