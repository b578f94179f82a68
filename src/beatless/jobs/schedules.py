"""Schedules: time units, EventBridge Scheduler expressions, missed-run windows.

Standard library only (the registry, the CDK app and the Lambdas read it).

- `Schedule`: an expression and its time zone, as a registry entry declares it;
  `MonthlyTime`: a time of the month for monthly schedules.
- `parse_schedule`: a Scheduler expression as the set of times it fires
  (`Cron.latest_at_or_before`) or its rate (`Rate`). Errors name the field.
  `fire_times`: every fire of one in a time span (the local scheduler loop, the cost report).
- `missed_run_window_seconds` / `needs_watchdog`: every job alarms when no run
  succeeded within 1.5 x its period; CloudWatch alarms can wait at most
  `MAX_ALARM_WINDOW_SECONDS`, longer windows are judged by `job_watchdog`.
"""

from __future__ import annotations

import calendar
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from beatless.errors import InvalidInputError

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR

# CloudWatch's longest alarm warm-up (WarmUpPeriodDurationInMinutes <= 2,880):
# a direct alarm waits one window after it is created, so windows up to this
# never alarm before a new job's first fire time could have succeeded.
MAX_ALARM_WINDOW_SECONDS = 2 * DAY

# How far back a cron expression is searched for its latest fire time.
_SEARCH_YEARS = 5


def missed_run_window_seconds(period_seconds: int) -> int:
    """1.5 x the period, rounded up to whole minutes (alarm periods are minutes)."""
    return math.ceil(period_seconds * 1.5 / MINUTE) * MINUTE


def needs_watchdog(period_seconds: int) -> bool:
    """True when the window is too long for a direct CloudWatch alarm."""
    return missed_run_window_seconds(period_seconds) > MAX_ALARM_WINDOW_SECONDS


@dataclass(frozen=True)
class Schedule:
    """An EventBridge Scheduler expression and the time zone it is read in.

    A job with several schedules gives each a `label` (it names the schedule's
    resources) and its own `input`: keys merged into the Scheduler's event (for
    example `{"action": "health_check"}`)."""

    expression: str  # "rate(1 minute)" or "cron(min hour dom month dow year)"
    timezone: str = "UTC"
    label: str = ""
    input: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class EventRule:
    """An EventBridge rule that invokes a job with the matching events, as they are
    (the job's entry point turns them into its own input)."""

    label: str  # names the rule's resources
    source: str  # e.g. "aws.ec2"
    detail_type: str  # e.g. "EC2 Instance State-change Notification"


@dataclass(frozen=True)
class MonthlyTime:
    """A time of the month (UTC) for monthly schedules; days 1-28 exist in every month."""

    day: int
    hour: int
    minute: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.day <= 28:
            raise ValueError(f"day must be 1..28 (exists in every month), got {self.day}")
        if not 0 <= self.hour <= 23 or not 0 <= self.minute <= 59:
            raise ValueError(f"hour/minute out of range: {self.hour}:{self.minute}")

    def later(self, minutes: int) -> MonthlyTime:
        """The same day, `minutes` later (must not cross midnight)."""
        total = self.hour * 60 + self.minute + minutes
        if not 0 <= total < 24 * 60:
            raise ValueError(f"{minutes} minutes after {self.hour:02}:{self.minute:02} leaves the day")
        return MonthlyTime(self.day, total // 60, total % 60)

    def cron(self) -> str:
        return f"cron({self.minute} {self.hour} {self.day} * ? *)"


# Literal names: calendar.month_abbr follows the locale.
_MONTHS = {
    name: i
    for i, name in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1
    )
}
# EventBridge cron counts days of the week 1-7 from Sunday; Python from Monday (0).
_AWS_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}


def _aws_to_python_weekday(day: int) -> int:
    return (day - 2) % 7


@dataclass(frozen=True)
class Rate:
    seconds: int


@dataclass(frozen=True)
class Cron:
    """An EventBridge Scheduler cron expression, as the sets of values it fires on.

    Supported: numbers, names (JAN-DEC, SUN-SAT), `*`, `?`, lists, ranges,
    steps (`0/15`, `*/5`, `1-5/2`) and `L` (last day of the month). `W`, `#`
    and `L` in the day-of-week field raise: no registry job uses them.
    """

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int] | None  # None: "?" (the day of the week decides)
    last_day_of_month: bool
    months: frozenset[int]
    weekdays: frozenset[int] | None  # Python weekdays (Monday = 0); None: "?"
    years: frozenset[int] | None  # None: every year
    zone: tzinfo

    def _day_matches(self, day: date) -> bool:
        if day.month not in self.months or (self.years is not None and day.year not in self.years):
            return False
        if self.weekdays is not None and day.weekday() not in self.weekdays:
            return False
        if self.days_of_month is not None or self.last_day_of_month:
            last = calendar.monthrange(day.year, day.month)[1]
            in_days = self.days_of_month is not None and day.day in self.days_of_month
            if not (in_days or (self.last_day_of_month and day.day == last)):
                return False
        return True

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        """The most recent fire time <= `moment` (UTC), or None within _SEARCH_YEARS."""
        local = moment.astimezone(self.zone)
        hours = sorted(self.hours, reverse=True)
        minutes = sorted(self.minutes, reverse=True)
        day = local.date()
        for _ in range(366 * _SEARCH_YEARS):
            if self._day_matches(day):
                for hour in hours:
                    for minute in minutes:
                        fire = datetime(day.year, day.month, day.day, hour, minute, tzinfo=self.zone)
                        if fire <= local:
                            return fire.astimezone(UTC)
            day -= timedelta(days=1)
        return None


def _range_values(field: str, text: str, low: int, high: int, names: Mapping[str, int]) -> set[int]:
    def number(token: str) -> int:
        token = token.strip().upper()
        if token in names:
            return names[token]
        if not token.isdigit():
            raise InvalidInputError(field, f"{token!r} is not a number or a name")
        value = int(token)
        if not low <= value <= high:
            raise InvalidInputError(field, f"{value} is outside {low}-{high}")
        return value

    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise InvalidInputError(field, f"step {step_text!r} must be a positive integer")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = number(first), number(last)
            if start > end:
                raise InvalidInputError(field, f"range {base!r} runs backwards")
        else:
            start = number(base)
            end = high if step_text else start  # "0/15": from 0 every 15
        values.update(range(start, end + 1, step))
    return values


def fire_times(
    parsed: Cron | Rate, after: datetime, until: datetime, *, anchor: datetime | None = None
) -> Iterator[datetime]:
    """The fire times in (`after`, `until`], oldest first (UTC). A rate fires at `anchor` +
    k x its period (EventBridge Scheduler counts a rate from when the schedule was created;
    default: `after`)."""
    if isinstance(parsed, Rate):
        start = anchor or after
        k = max(0, math.floor((after - start).total_seconds() / parsed.seconds) + 1)
        while (fire := start + timedelta(seconds=k * parsed.seconds)) <= until:
            if fire > after:
                yield fire
            k += 1
        return
    day, last = after.astimezone(parsed.zone).date(), until.astimezone(parsed.zone).date()
    while day <= last:
        if parsed._day_matches(day):
            for hour in sorted(parsed.hours):
                for minute in sorted(parsed.minutes):
                    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=parsed.zone)
                    fire = local.astimezone(UTC)
                    if fire.astimezone(parsed.zone).replace(tzinfo=None) != local.replace(tzinfo=None):
                        continue  # a local time the clocks skip (spring forward): no fire, as in AWS
                    if after < fire <= until:
                        yield fire
        day += timedelta(days=1)


def parse_schedule(expression: str, timezone: str = "UTC", *, field: str = "schedule") -> Cron | Rate:
    """Parse a Scheduler expression; raises InvalidInputError naming `field`."""
    try:
        zone: tzinfo = UTC if timezone == "UTC" else ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInputError(f"{field}.timezone", f"unknown time zone {timezone!r}") from None
    rate = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression.strip())
    if rate:
        unit = {"minute": MINUTE, "hour": HOUR, "day": DAY}[rate.group(2).rstrip("s")]
        if int(rate.group(1)) < 1:
            raise InvalidInputError(field, f"{expression!r}: the rate must be at least 1")
        return Rate(int(rate.group(1)) * unit)
    cron = re.fullmatch(r"cron\((.*)\)", expression.strip())
    if not cron:
        raise InvalidInputError(field, f"{expression!r} is neither rate(...) nor cron(...)")
    parts = cron.group(1).split()
    if len(parts) != 6:
        raise InvalidInputError(field, f"{expression!r}: cron needs 6 fields, got {len(parts)}")
    minute, hour, dom, month, dow, year = parts
    if "W" in dom.upper() or "#" in dow or "L" in dow.upper() or ("L" in dom.upper() and dom.upper() != "L"):
        raise InvalidInputError(
            field, f"{expression!r}: W, #, and L other than a lone day-of-month L are not supported"
        )
    if (dom == "?") == (dow == "?"):
        raise InvalidInputError(field, f"{expression!r}: exactly one of day-of-month and day-of-week is '?'")
    last_day = dom.upper() == "L"
    days = None if dom == "?" or last_day else frozenset(_range_values(f"{field}.day", dom, 1, 31, {}))
    weekdays = (
        None
        if dow == "?"
        else frozenset(
            _aws_to_python_weekday(d) for d in _range_values(f"{field}.weekday", dow, 1, 7, _AWS_DAYS)
        )
    )
    return Cron(
        minutes=frozenset(_range_values(f"{field}.minute", minute, 0, 59, {})),
        hours=frozenset(_range_values(f"{field}.hour", hour, 0, 23, {})),
        days_of_month=days,
        last_day_of_month=last_day,
        months=frozenset(_range_values(f"{field}.month", month, 1, 12, _MONTHS)),
        weekdays=weekdays,
        years=None if year == "*" else frozenset(_range_values(f"{field}.year", year, 1970, 2199, {})),
        zone=zone,
    )
