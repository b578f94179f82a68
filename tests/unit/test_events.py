"""Scheduled events are parsed strictly: the period comes from the event."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from beatless.errors import InvalidInputError
from beatless.events import SCHEDULER_INPUT, Option, parse_scheduled_event, positive_int

FIXED_NOW = datetime(2030, 1, 1, tzinfo=UTC)


def test_scheduled_time_from_event_not_clock() -> None:
    event = {"scheduled_time": "2026-11-23T09:00:00Z", "execution_id": "x", "attempt_number": "2"}
    parsed = parse_scheduled_event(event, now=lambda: FIXED_NOW)
    assert parsed.scheduled_time == datetime(2026, 11, 23, 9, tzinfo=UTC)
    assert parsed.scheduled_time_given
    assert parsed.attempt_number == 2


def test_missing_scheduled_time_means_now() -> None:
    parsed = parse_scheduled_event({}, now=lambda: FIXED_NOW)
    assert parsed.scheduled_time == FIXED_NOW
    assert not parsed.scheduled_time_given


def test_offsets_are_normalised_to_utc() -> None:
    parsed = parse_scheduled_event({"scheduled_time": "2026-11-23T10:00:00+01:00"})
    assert parsed.scheduled_time == datetime(2026, 11, 23, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"scheduled_time": "yesterday"}, "scheduled_time"),
        ({"scheduled_time": "2026-11-23T09:00:00"}, "scheduled_time"),
        ({"scheduled_time": 12}, "scheduled_time"),
        ({"attempt_number": "0"}, "attempt_number"),
        ({"attempt_number": True}, "attempt_number"),
        ({"execution_id": 5}, "execution_id"),
        ({"surprise": 1}, "surprise"),
        ({"dry_run": True}, "dry_run"),  # not a mutating job
    ],
)
def test_malformed_events_name_the_field(event: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_scheduled_event(event)
    assert info.value.field == field
    assert field in str(info.value)


def test_non_object_event_rejected() -> None:
    with pytest.raises(InvalidInputError, match="event"):
        parse_scheduled_event(["not", "an", "object"])


def test_dry_run_only_for_mutating_jobs_and_must_be_bool() -> None:
    assert parse_scheduled_event({"dry_run": True}, allow_dry_run=True).dry_run
    with pytest.raises(InvalidInputError, match="dry_run"):
        parse_scheduled_event({"dry_run": "yes"}, allow_dry_run=True)


def test_job_options_parsed_with_defaults() -> None:
    spec = {"samples": Option(positive_int(maximum=60), default=6)}
    assert parse_scheduled_event({}, options=spec).options == {"samples": 6}
    assert parse_scheduled_event({"samples": 2}, options=spec).options == {"samples": 2}
    with pytest.raises(InvalidInputError, match="samples: must be at most 60"):
        parse_scheduled_event({"samples": 61}, options=spec)


def test_scheduler_input_template_is_valid_json_with_the_common_fields() -> None:
    template = json.loads(SCHEDULER_INPUT)
    assert set(template) == {"scheduled_time", "execution_id", "attempt_number"}
    assert all(v.startswith("<aws.scheduler.") for v in template.values())
