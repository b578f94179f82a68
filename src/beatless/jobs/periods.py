"""Business periods, derived from a run's time (UTC), never from when it happens to run.

A `Period` is the half-open interval [start, end) a run is about, with a label
that makes a good part of an idempotency key ("2026-11", "2026-11-23",
"2026-11-23T09:00Z", "2026-W48"). A registry entry names its kind
(`PeriodKind`); the job runtime derives the period of each run with `period_of`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from beatless.timestamps import iso_z


class PeriodKind(enum.StrEnum):
    """Which period a run is about, given its (clamped) scheduled time T."""

    SLOT = "slot"  # the job's period_seconds slot containing T (aligned on the Unix epoch)
    HOUR = "hour"  # the hour of T
    PREVIOUS_DAY = "previous_day"  # the UTC day before T's
    WEEK = "week"  # the ISO week (Monday 00:00 UTC) of T
    MONTH = "month"  # the month of T
    PREVIOUS_MONTH = "previous_month"  # the month before T's


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime  # exclusive
    label: str

    def as_dict(self) -> dict[str, str]:
        return {"start": iso_z(self.start), "end": iso_z(self.end), "label": self.label}


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("scheduled times carry a time zone")
    return moment.astimezone(UTC)


def slot(moment: datetime, seconds: int) -> Period:
    """The `seconds`-long slot (aligned on the Unix epoch) that contains `moment`."""
    moment = _utc(moment)
    epoch = int(moment.timestamp())
    start = datetime.fromtimestamp(epoch - epoch % seconds, UTC)
    return Period(start, start + timedelta(seconds=seconds), iso_z(start).replace(":00Z", "Z"))


def hour_of(moment: datetime) -> Period:
    start = _utc(moment).replace(minute=0, second=0, microsecond=0)
    return Period(start, start + timedelta(hours=1), start.strftime("%Y-%m-%dT%H:00Z"))


def previous_hour(moment: datetime) -> Period:
    return hour_of(_utc(moment) - timedelta(hours=1))


def day_of(moment: datetime) -> Period:
    start = _utc(moment).replace(hour=0, minute=0, second=0, microsecond=0)
    return Period(start, start + timedelta(days=1), start.strftime("%Y-%m-%d"))


def previous_day(moment: datetime) -> Period:
    return day_of(_utc(moment) - timedelta(days=1))


def week_of(moment: datetime) -> Period:
    """The ISO week (Monday 00:00 UTC to the next Monday) that contains `moment`."""
    moment = _utc(moment)
    start = (moment - timedelta(days=moment.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    year, week, _ = start.isocalendar()
    return Period(start, start + timedelta(days=7), f"{year}-W{week:02}")


def month_of(moment: datetime) -> Period:
    start = _utc(moment).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=32)).replace(day=1)
    return Period(start, following, start.strftime("%Y-%m"))


def previous_month(moment: datetime) -> Period:
    return month_of(month_of(moment).start - timedelta(days=1))


def first_day(period: Period) -> date:
    """The period's first day as a DATE (the `month`/`day` columns of the job tables)."""
    return period.start.date()


def period_of(kind: PeriodKind, moment: datetime, slot_seconds: int) -> Period:
    """The period of `kind` for a run at `moment` (`slot_seconds` for `PeriodKind.SLOT`)."""
    if kind is PeriodKind.SLOT:
        return slot(moment, slot_seconds)
    if kind is PeriodKind.HOUR:
        return hour_of(moment)
    if kind is PeriodKind.PREVIOUS_DAY:
        return previous_day(moment)
    if kind is PeriodKind.WEEK:
        return week_of(moment)
    if kind is PeriodKind.MONTH:
        return month_of(moment)
    return previous_month(moment)
