"""How the worker service scales on queue depth: the parameters, and what they decide.

Pure data and one pure function, standard library only. The CDK app builds the
real CloudWatch alarms and Application Auto Scaling step policies from
`ScalingParameters`; the local runner feeds the monitor's readings to `decide`
to scale local worker processes by the same rules.

The rules (each one is an alarm or a policy in AWS):

* Scale out: an alarm on SUM over the service's queues of `PendingTasks`
  (Maximum per period) with high-resolution periods (10 s by default), breaching
  at ``>= 1`` pending task, so a single task starts a worker from zero. A step
  policy adds tasks by backlog size. CloudWatch re-invokes the policy every
  period while the alarm stays in ALARM; the scale-out cooldown stops those
  re-invocations from adding a task every 10 s while Fargate is still starting
  the previous one, except that a *larger* step may still add the difference
  (Application Auto Scaling's step-scaling cooldown semantics).
* Scale in: an alarm on SUM of `PendingTasks` and `ReservedTasks` (Maximum, so
  one busy reading in a period blocks it) that must be 0 in every period of
  the idle window. Then no task is waiting or running anywhere (tasks are
  acked late, so a running task is "reserved"), and the service is set to its
  minimum. Re-invocations while the alarm stays in ALARM re-assert the same
  capacity, so they are harmless.
* Missing data is never breaching for either scaling alarm: a monitor that
  cannot read Redis publishes no depth datapoint and so can cause neither a
  scale-in nor a scale-out. The stale-heartbeat alarm (missing = breaching)
  tells operators instead.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from beatless.errors import InvalidInputError

# CloudWatch accepts these alarm periods for high-resolution metrics, or any multiple of 60.
HIGH_RESOLUTION_PERIODS = (10, 20, 30)


def _check_period(name: str, seconds: int) -> None:
    if seconds not in HIGH_RESOLUTION_PERIODS and (seconds < 60 or seconds % 60):
        raise InvalidInputError(
            name, f"must be 10, 20, 30 or a multiple of 60 seconds (CloudWatch), got {seconds}"
        )


@dataclass(frozen=True)
class ScaleOutStep:
    """Add `add_tasks` tasks when the total pending count is at least `pending_at_least`."""

    pending_at_least: int
    add_tasks: int


DEFAULT_SCALE_OUT_STEPS: tuple[ScaleOutStep, ...] = (
    ScaleOutStep(pending_at_least=1, add_tasks=1),
    ScaleOutStep(pending_at_least=10, add_tasks=2),
    ScaleOutStep(pending_at_least=50, add_tasks=4),
    ScaleOutStep(pending_at_least=200, add_tasks=8),
)


@dataclass(frozen=True)
class ScalingParameters:
    """Everything the scaling alarms and policies are built from.

    Defaults: from zero to a decision in at most one sampling interval plus
    one 10 s period; +1/+2/+4/+8 tasks at 1/10/50/200 pending with a 60 s
    cooldown (about a Fargate task's start time, so a starting task is not
    doubled by the alarm's 10 s re-invocations); scale to 0 after 5 idle
    minutes; operators are told when the monitor has been blind for 3 minutes.
    """

    min_tasks: int = 0
    max_tasks: int = 10
    scale_out_period_seconds: int = 10
    scale_out_evaluation_periods: int = 1
    scale_out_datapoints_to_alarm: int = 1
    scale_out_steps: tuple[ScaleOutStep, ...] = DEFAULT_SCALE_OUT_STEPS
    scale_out_cooldown_seconds: int = 60
    scale_in_idle_seconds: int = 300
    scale_in_period_seconds: int = 60
    heartbeat_stale_seconds: int = 180

    def __post_init__(self) -> None:
        if self.min_tasks < 0:
            raise InvalidInputError("min_tasks", f"must be at least 0, got {self.min_tasks}")
        if self.max_tasks < max(1, self.min_tasks):
            raise InvalidInputError(
                "max_tasks",
                f"must be at least 1 and at least min_tasks ({self.min_tasks}), got {self.max_tasks}",
            )
        _check_period("scale_out_period_seconds", self.scale_out_period_seconds)
        _check_period("scale_in_period_seconds", self.scale_in_period_seconds)
        if self.scale_out_evaluation_periods < 1:
            raise InvalidInputError(
                "scale_out_evaluation_periods", f"must be at least 1, got {self.scale_out_evaluation_periods}"
            )
        if not 1 <= self.scale_out_datapoints_to_alarm <= self.scale_out_evaluation_periods:
            raise InvalidInputError(
                "scale_out_datapoints_to_alarm",
                f"must be between 1 and scale_out_evaluation_periods ({self.scale_out_evaluation_periods}), "
                f"got {self.scale_out_datapoints_to_alarm}",
            )
        self._check_steps()
        if self.scale_out_cooldown_seconds < 0:
            raise InvalidInputError(
                "scale_out_cooldown_seconds", f"must be at least 0, got {self.scale_out_cooldown_seconds}"
            )
        if (
            self.scale_in_idle_seconds < self.scale_in_period_seconds
            or self.scale_in_idle_seconds % self.scale_in_period_seconds
        ):
            raise InvalidInputError(
                "scale_in_idle_seconds",
                f"must be a whole number (>= 1) of scale_in_period_seconds ({self.scale_in_period_seconds}), "
                f"got {self.scale_in_idle_seconds}",
            )
        if self.heartbeat_stale_seconds < 60 or self.heartbeat_stale_seconds % 60:
            raise InvalidInputError(
                "heartbeat_stale_seconds",
                f"must be a multiple of 60 seconds, got {self.heartbeat_stale_seconds}",
            )

    def _check_steps(self) -> None:
        steps = self.scale_out_steps
        if not steps:
            raise InvalidInputError("scale_out_steps", "must name at least one step")
        if steps[0].pending_at_least != 1:
            raise InvalidInputError(
                "scale_out_steps",
                "the first step must start at 1 pending task, so a single task starts a worker from zero; "
                f"got {steps[0].pending_at_least}",
            )
        for before, after in itertools.pairwise(steps):
            if after.pending_at_least <= before.pending_at_least:
                raise InvalidInputError("scale_out_steps", "pending_at_least must be strictly increasing")
            if after.add_tasks < before.add_tasks:
                raise InvalidInputError("scale_out_steps", "a larger backlog must not add fewer tasks")
        for step in steps:
            if step.add_tasks < 1:  # capacity is capped at max_tasks anyway
                raise InvalidInputError(
                    "scale_out_steps", f"add_tasks must be at least 1, got {step.add_tasks}"
                )

    @property
    def scale_out_threshold(self) -> int:
        """The scale-out alarm breaches at this many pending tasks (always 1)."""
        return self.scale_out_steps[0].pending_at_least

    @property
    def scale_in_evaluation_periods(self) -> int:
        return self.scale_in_idle_seconds // self.scale_in_period_seconds

    @property
    def heartbeat_evaluation_periods(self) -> int:
        """The heartbeat alarm counts readings per minute."""
        return self.heartbeat_stale_seconds // 60

    def worst_case_scale_out_seconds(self, sample_interval_seconds: int) -> int:
        """From the first pending task to a scale-out decision, at worst.

        The task appears just after a reading, so it is seen one sampling
        interval later; the alarm then needs `datapoints_to_alarm` breaching
        periods, the last of which closes at most one period after the reading.
        """
        return sample_interval_seconds + self.scale_out_period_seconds * self.scale_out_datapoints_to_alarm


@dataclass(frozen=True)
class Reading:
    """One reading of the monitor: per queue counts, or None when Redis could not be read."""

    at: float  # seconds since the epoch
    pending: Mapping[str, int] | None
    reserved: Mapping[str, int] | None = None

    @property
    def succeeded(self) -> bool:
        return self.pending is not None and self.reserved is not None


@dataclass(frozen=True)
class ScalingState:
    """What the decision needs to remember between calls (the scalable target's view)."""

    desired: int = 0
    last_scale_out_at: float | None = None
    last_scale_out_added: int = 0


Action = Literal["scale_out", "scale_in", "hold"]


@dataclass(frozen=True)
class Decision:
    desired: int
    action: Action
    reason: str
    state: ScalingState
    monitor_blind: bool = field(default=False)


def _periods(now: float, period: int, count: int) -> list[tuple[float, float]]:
    """The last `count` complete, clock-aligned periods before `now`, newest first."""
    end = math.floor(now / period) * period
    return [(end - (i + 1) * period, end - i * period) for i in range(count)]


def _sum_of_maxima(readings: list[Reading], start: float, end: float, *, with_reserved: bool) -> int | None:
    """SUM over queues of each queue's Maximum in [start, end): the alarms' metric math.

    None when no successful reading fell in the period (missing data).
    """
    maxima: dict[tuple[str, str], int] = {}
    for reading in readings:
        if not start <= reading.at < end or not reading.succeeded:
            continue
        assert reading.pending is not None and reading.reserved is not None
        series = [("pending", reading.pending)] + ([("reserved", reading.reserved)] if with_reserved else [])
        for kind, counts in series:
            for queue, count in counts.items():
                key = (kind, queue)
                maxima[key] = max(maxima.get(key, count), count)
    return sum(maxima.values()) if maxima else None


def _scale_out(
    params: ScalingParameters, readings: list[Reading], state: ScalingState, now: float
) -> Decision | None:
    periods = _periods(now, params.scale_out_period_seconds, params.scale_out_evaluation_periods)
    values = [_sum_of_maxima(readings, s, e, with_reserved=False) for s, e in periods]
    breaching = [v for v in values if v is not None and v >= params.scale_out_threshold]
    if len(breaching) < params.scale_out_datapoints_to_alarm:
        return None
    pending = max(breaching)  # MetricAggregationType Maximum
    step = [s for s in params.scale_out_steps if pending >= s.pending_at_least][-1]
    in_cooldown = (
        state.last_scale_out_at is not None
        and now < state.last_scale_out_at + params.scale_out_cooldown_seconds
    )
    add = step.add_tasks - state.last_scale_out_added if in_cooldown else step.add_tasks
    if add <= 0:
        reason = f"{pending} pending; scale-out cooldown: +{state.last_scale_out_added} already under way"
        return Decision(state.desired, "hold", reason, state)
    current = max(state.desired, params.min_tasks)
    desired = min(params.max_tasks, current + add)
    if desired <= state.desired:
        return Decision(state.desired, "hold", f"{pending} pending; at max_tasks ({params.max_tasks})", state)
    new_state = replace(state, desired=desired, last_scale_out_at=now, last_scale_out_added=step.add_tasks)
    added = desired - state.desired
    reason = f"{pending} pending >= {step.pending_at_least}: +{added} ({state.desired} -> {desired})"
    return Decision(desired, "scale_out", reason, new_state)


def _scale_in(
    params: ScalingParameters, readings: list[Reading], state: ScalingState, now: float
) -> Decision | None:
    periods = _periods(now, params.scale_in_period_seconds, params.scale_in_evaluation_periods)
    values = [_sum_of_maxima(readings, s, e, with_reserved=True) for s, e in periods]
    # Every period must hold data and be idle; a missing period is not breaching.
    if not all(v is not None and v <= 0 for v in values):
        return None
    if state.desired == params.min_tasks:
        return Decision(state.desired, "hold", "idle; already at min_tasks", state)
    reason = (
        f"pending + reserved = 0 for {params.scale_in_idle_seconds} s: {state.desired} -> {params.min_tasks}"
    )
    return Decision(params.min_tasks, "scale_in", reason, replace(state, desired=params.min_tasks))


def decide(
    params: ScalingParameters, readings: Iterable[Reading], state: ScalingState, now: float
) -> Decision:
    """What the scaling alarms and policies would do at `now`, given the monitor's readings.

    Pure: the caller keeps the returned `Decision.state` for the next call.
    Readings may be in any order and may include old ones (they are ignored).
    """
    recent = list(readings)
    stale_periods = _periods(now, 60, params.heartbeat_evaluation_periods)
    blind = not any(r.succeeded and stale_periods[-1][0] <= r.at < stale_periods[0][1] for r in recent)
    decision = _scale_out(params, recent, state, now) or _scale_in(params, recent, state, now)
    if decision is None:
        decision = Decision(state.desired, "hold", "no scaling alarm in ALARM", state)
    return replace(decision, monitor_blind=blind)
