"""The local stand-in of EventBridge Scheduler: every registry job fired on its schedules.

`SchedulerLoop` reads each job's schedules from the registry (`beatless.jobs.JOBS`),
computes their fire times (`beatless.jobs.schedules.fire_times`: crons on their
calendar, rates every period from when the loop started, as a schedule counts from its
creation) and invokes the job with the event the Scheduler sends — `SCHEDULER_INPUT`
filled in (`scheduled_time` = the fire time, an execution id, attempt 1) and the
schedule's own input — in fire-time order.

Time runs on a `SimulatedClock`: simulated time = start + real elapsed x `speed`, so at
speed 1,440 a day passes in a minute. Jobs act on their own clocks (a run for a time
ahead of the database's is clamped to now and says so in its summary); the loop only
decides when each fires. A run that raises is recorded (and the loop goes on, as the
Scheduler does; its retries are not simulated).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from beatless.jobs import Job
from beatless.jobs.schedules import fire_times, parse_schedule
from beatless.timestamps import iso_z


@dataclass(frozen=True, order=True)
class Fire:
    at: datetime
    job: str
    label: str = ""
    input: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def event(self) -> dict[str, Any]:
        """What EventBridge Scheduler sends for this fire."""
        return {
            "scheduled_time": iso_z(self.at),
            "execution_id": str(uuid.uuid4()),
            "attempt_number": "1",
            **self.input,
        }


@dataclass(frozen=True)
class Run:
    fire: Fire
    ok: bool
    seconds: float
    result: Any


class SimulatedClock:
    """Simulated time: `start` + real seconds elapsed x `speed` (1: real time)."""

    def __init__(
        self, start: datetime, speed: float = 1.0, real: Callable[[], float] = time.monotonic
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.start, self.speed, self._real = start, speed, real
        self._origin = real()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(self._real() - self._origin) * self.speed)

    def real_seconds_until(self, moment: datetime) -> float:
        return max(0.0, (moment - self.now()).total_seconds() / self.speed)


class SchedulerLoop:
    """Fires `jobs` on their schedules through `invoke(name, event) -> (ok, result)`."""

    def __init__(
        self,
        jobs: Iterable[Job],
        invoke: Callable[[str, dict[str, Any]], tuple[bool, Any]],
        clock: SimulatedClock,
    ) -> None:
        self.schedules = [
            (job.name, schedule, parse_schedule(schedule.expression, schedule.timezone, field=job.name))
            for job in jobs
            for schedule in job.schedules
        ]
        self.invoke, self.clock = invoke, clock
        self.anchor = clock.start  # rates count from here, as from a schedule's creation
        self.runs: list[Run] = []
        self._lock = threading.Lock()

    def fires(self, after: datetime, until: datetime) -> list[Fire]:
        """Every fire in (`after`, `until`], in order."""
        return sorted(
            Fire(at, name, schedule.label, dict(schedule.input))
            for name, schedule, parsed in self.schedules
            for at in fire_times(parsed, after, until, anchor=self.anchor)
        )

    def next_fire(self, after: datetime, horizon: timedelta = timedelta(days=32)) -> Fire | None:
        found = self.fires(after, after + horizon)
        return found[0] if found else None

    def next_fire_of(
        self, job: str, after: datetime, horizon: timedelta = timedelta(days=32)
    ) -> datetime | None:
        """When `job` fires next after `after` (any of its schedules), within `horizon`."""
        found = [
            next(fire_times(parsed, after, after + horizon, anchor=self.anchor), None)
            for name, _, parsed in self.schedules
            if name == job
        ]
        return min((at for at in found if at is not None), default=None)

    def run(
        self,
        until: datetime,
        *,
        stop: threading.Event | None = None,
        on_run: Callable[[Run], None] | None = None,
    ) -> list[Run]:
        """Fire everything due up to simulated `until` (or until `stop` is set); the runs."""
        cursor = self.clock.start
        stop = stop or threading.Event()
        while cursor < until and not stop.is_set():
            upcoming = self.next_fire(cursor)
            if upcoming is None or upcoming.at > until:
                break
            if stop.wait(self.clock.real_seconds_until(upcoming.at)):
                break  # stopped while waiting
            # Everything due by now (a slow run lets several fall due at once: fired in order).
            now = min(max(self.clock.now(), upcoming.at), until)
            for fire in self.fires(cursor, now):
                if stop.is_set():
                    break
                started = time.perf_counter()
                ok, result = self.invoke(fire.job, fire.event())
                done = Run(fire, ok, time.perf_counter() - started, result)
                with self._lock:
                    self.runs.append(done)
                if on_run is not None:
                    on_run(done)
            cursor = now
        return self.runs

    def counts(self) -> dict[str, int]:
        with self._lock:
            found: dict[str, int] = {}
            for run in self.runs:
                key = f"{run.fire.job}:{run.fire.label}" if run.fire.label else run.fire.job
                found[key] = found.get(key, 0) + 1
            return found
