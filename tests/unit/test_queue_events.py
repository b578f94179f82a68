"""The console test events in events/worker_monitor/ are valid for the handler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import worker_monitor
from beatless.events import parse_scheduled_event

EVENTS = Path(__file__).resolve().parents[2] / "events" / "worker_monitor"
REQUIRED = {"scheduled_tick.json", "minimal.json", "single_reading.json"}


def test_the_documented_events_exist() -> None:
    assert {p.name for p in EVENTS.glob("*.json")} >= REQUIRED


@pytest.mark.parametrize("path", sorted(EVENTS.glob("*.json")), ids=lambda p: p.name)
def test_each_event_is_accepted(path: Path) -> None:
    event = json.loads(path.read_text())
    parsed = parse_scheduled_event(event, options=worker_monitor.OPTIONS)
    assert parsed.options["samples"] == event.get("samples")


def test_the_scheduled_tick_carries_every_scheduler_field() -> None:
    event = json.loads((EVENTS / "scheduled_tick.json").read_text())
    parsed = parse_scheduled_event(event, options=worker_monitor.OPTIONS)
    assert parsed.scheduled_time_given
    assert parsed.execution_id and parsed.attempt_number == 1
