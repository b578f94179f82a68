"""The local scheduler loop fires every registry job at its registry times: over a
simulated month on an accelerated clock, each schedule's count of runs is what its
expression says (counted here minute by minute, independently of the loop's calendar
arithmetic), every run carries the Scheduler's event with its fire time, runs come in
fire-time order, and the monthly allocation pair fires 30 minutes apart."""

from __future__ import annotations

import calendar
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from beatless.jobs import JOBS, Job
from beatless.jobs.schedules import Schedule
from beatless.local.scheduler import SchedulerLoop, SimulatedClock

START = datetime(2027, 2, 1, tzinfo=UTC)  # a month of 28 days, starting on a Monday
END = datetime(2027, 3, 1, tzinfo=UTC)
DAYS = {"SUN": 6, "MON": 0, "TUE": 1, "WED": 2, "THU": 3, "FRI": 4, "SAT": 5}


def field_matches(spec: str, value: int, low: int) -> bool:
    """One cron field (numbers, *, ?, lists, ranges, steps, day names) against a value."""
    for part in spec.split(","):
        part = part.upper()
        for name, number in DAYS.items():
            part = part.replace(name, str((number + 1) % 7 + 1))  # AWS: SUN = 1
        base, _, step = part.partition("/")
        if base in ("*", "?"):
            first, last = low, 10**6
        elif "-" in base:
            first, last = (int(x) for x in base.split("-"))
        else:
            first = int(base)
            last = first if not step else 10**6
        if first <= value <= last and (value - first) % int(step or 1) == 0:
            return True
    return False


def expected_count(schedule: Schedule) -> int:
    """Fires of `schedule` in (START, END], by brute force."""
    expression = schedule.expression
    if expression.startswith("rate("):
        number, unit = expression[5:-1].split()
        seconds = int(number) * {"minute": 60, "hour": 3600, "day": 86400}[unit.rstrip("s")]
        return int((END - START).total_seconds() // seconds)
    minute, hour, dom, month, dow, _year = expression[5:-1].split()
    count, moment = 0, START + timedelta(minutes=1)
    while moment <= END:
        aws_weekday = (moment.weekday() + 1) % 7 + 1  # AWS: SUN = 1 ... SAT = 7
        last_day = calendar.monthrange(moment.year, moment.month)[1]
        day_ok = (dom == "L" and moment.day == last_day) if dom == "L" else (
            dom == "?" or field_matches(dom, moment.day, 1))  # fmt: skip
        if (
            field_matches(minute, moment.minute, 0)
            and field_matches(hour, moment.hour, 0)
            and day_ok
            and field_matches(month, moment.month, 1)
            and (dow == "?" or field_matches(dow, aws_weekday, 1))
        ):
            count += 1
        moment += timedelta(minutes=1)
    return count


def run_month(jobs: tuple[Job, ...] = JOBS) -> SchedulerLoop:
    calls: list[tuple[str, dict[str, Any]]] = []

    def invoke(name: str, event: dict[str, Any]) -> tuple[bool, Any]:
        calls.append((name, event))
        return True, {"job": name}

    loop = SchedulerLoop(jobs, invoke, SimulatedClock(START, speed=1e9))
    loop.run(END)
    return loop


def test_over_a_simulated_month_every_schedule_fires_as_its_expression_says() -> None:
    loop = run_month()
    counts = loop.counts()
    for job in JOBS:
        for schedule in job.schedules:
            key = f"{job.name}:{schedule.label}" if schedule.label else job.name
            assert counts.get(key, 0) == expected_count(schedule), (key, schedule.expression)
    # Sanity of the brute force itself on a few known ones.
    by_name = {job.name: job for job in JOBS}
    assert counts["worker_monitor"] == 28 * 24 * 60
    assert counts["credit_health_check"] == 4  # Mondays of February 2027
    assert counts["shared_credit_allocation"] == 1 and counts["graph_credit_allocation"] == 1
    assert by_name["kuzu_instance_monitor"].schedules and counts["kuzu_instance_monitor:health"] == 28 * 24


def test_runs_carry_the_scheduler_event_in_fire_time_order_and_the_monthly_pair_is_30_minutes_apart() -> None:
    loop = run_month()
    fires = [run.fire for run in loop.runs]
    assert fires == sorted(fires)
    for run in loop.runs[:200]:
        event = run.fire.event()
        assert event["scheduled_time"] == run.fire.at.isoformat().replace("+00:00", "Z")
        assert event["attempt_number"] == "1" and event["execution_id"]
    monthly = {run.fire.job: run.fire.at for run in loop.runs if "credit_allocation" in run.fire.job}
    assert monthly["graph_credit_allocation"] - monthly["shared_credit_allocation"] == timedelta(minutes=30)
    health = next(run.fire for run in loop.runs if run.fire.label == "health")
    assert health.event()["action"] == "health_check"  # the schedule's own input


def test_stop_ends_the_loop_and_a_failed_run_does_not() -> None:
    stop = threading.Event()
    seen: list[str] = []

    def invoke(name: str, event: dict[str, Any]) -> tuple[bool, Any]:
        seen.append(name)
        if len(seen) == 3:
            return False, {"errorType": "RuntimeError"}
        if len(seen) == 10:
            stop.set()
        return True, {}

    loop = SchedulerLoop(JOBS, invoke, SimulatedClock(START, speed=1e9))
    runs = loop.run(END, stop=stop)
    assert len(runs) == 10 and [r.ok for r in runs].count(False) == 1


def test_a_clock_at_speed_runs_simulated_time_that_fast() -> None:
    ticks = iter([0.0, 0.0, 1.5, 2.0])
    clock = SimulatedClock(START, speed=1440, real=lambda: next(ticks))
    assert clock.now() == START
    assert clock.now() == START + timedelta(minutes=36)  # 1.5 s at 1,440x
    assert clock.real_seconds_until(START + timedelta(days=1)) == pytest.approx(60 - 2.0)
    with pytest.raises(ValueError, match="speed"):
        SimulatedClock(START, speed=0)


def test_a_cron_in_a_zone_with_daylight_saving_skips_the_hour_the_clocks_skip() -> None:
    from zoneinfo import ZoneInfo

    from beatless.jobs.schedules import fire_times, parse_schedule

    hourly = parse_schedule("cron(30 * * * ? *)", "America/New_York")
    zone = ZoneInfo("America/New_York")
    spring = datetime(2025, 3, 9, tzinfo=zone)  # 02:00 -> 03:00
    fires = list(fire_times(hourly, spring, spring + timedelta(days=1)))
    assert len(fires) == len(set(fires)) == 23  # no 02:30 that day, and nothing twice
    assert fires == sorted(fires)


def test_the_next_due_time_of_each_job_is_its_next_run_in_the_month() -> None:
    """What the live view shows as "next due": the first run after a moment, of any of the
    job's schedules, equal to the first run the loop itself makes after that moment."""
    loop = run_month()
    probe = START + timedelta(days=3, hours=5, minutes=7, seconds=30)
    for job in JOBS:
        made = [run.fire.at for run in loop.runs if run.fire.job == job.name and run.fire.at > probe]
        due = SchedulerLoop(JOBS, lambda *_: (True, None), SimulatedClock(START, 1)).next_fire_of(
            job.name, probe
        )
        assert due == (made[0] if made else None) or (not made and due is not None and due >= END), job.name
    assert (
        SchedulerLoop(JOBS, lambda *_: (True, None), SimulatedClock(START, 1)).next_fire_of("none", probe)
        is None
    )
