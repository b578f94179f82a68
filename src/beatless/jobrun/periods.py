"""Business periods, derived from the scheduled time (UTC), never from the clock.

A `Period` is the half-open interval [start, end) a run is about, with a label
that makes a good part of an idempotency key ("2026-11", "2026-11-23",
"2026-11-23T09:00Z").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime  # exclusive
    label: str

    def as_dict(self) -> dict[str, str]:
        return {"start": _iso(self.start), "end": _iso(self.end), "label": self.label}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("scheduled times carry a time zone")
    return moment.astimezone(UTC)


def slot(moment: datetime, seconds: int) -> Period:
    """The `seconds`-long slot (aligned on the Unix epoch) that contains `moment`."""
    moment = _utc(moment)
    epoch = int(moment.timestamp())
    start = datetime.fromtimestamp(epoch - epoch % seconds, UTC)
    return Period(start, start + timedelta(seconds=seconds), _iso(start).replace(":00Z", "Z"))


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


def month_of(moment: datetime) -> Period:
    start = _utc(moment).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=32)).replace(day=1)
    return Period(start, following, start.strftime("%Y-%m"))


def previous_month(moment: datetime) -> Period:
    return month_of(month_of(moment).start - timedelta(days=1))


def first_day(period: Period) -> date:
    """The period's first day as a DATE (the `month`/`day` columns of the job tables)."""
    return period.start.date()
