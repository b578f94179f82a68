"""Timestamps as Beatless writes them: ISO 8601, UTC, with a `Z`."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_z(moment: datetime) -> str:
    """`2026-11-23T09:15:00Z` (microseconds kept when there are any). Refuses naive times."""
    if moment.tzinfo is None:
        raise ValueError(f"a timestamp needs a time zone, got {moment!r}")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
