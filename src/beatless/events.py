"""The event every scheduled Lambda receives, parsed strictly.

EventBridge Scheduler sends `SCHEDULER_INPUT` with its context attributes
filled in. The business period of a run is derived from ``scheduled_time``
(stable across retries), never from the clock; a console test event may omit
it, and then the run is for "now". Unknown keys, wrong types and impossible
values raise `InvalidInputError` naming the field, before anything is changed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from beatless.errors import InvalidInputError

# The Scheduler target input (a JSON template; Scheduler substitutes the
# <aws.scheduler.*> placeholders on every invocation).
SCHEDULER_INPUT: str = json.dumps(
    {
        "scheduled_time": "<aws.scheduler.scheduled-time>",
        "execution_id": "<aws.scheduler.execution-id>",
        "attempt_number": "<aws.scheduler.attempt-number>",
    }
)

COMMON_FIELDS = ("scheduled_time", "execution_id", "attempt_number", "dry_run")


@dataclass(frozen=True)
class Option:
    """A job-specific event key: its parser, its default, and whether an event must carry it."""

    parse: Callable[[str, Any], Any]
    default: Any = None
    required: bool = False


@dataclass(frozen=True)
class ScheduledEvent:
    scheduled_time: datetime  # UTC; "now" when the event did not say
    scheduled_time_given: bool
    execution_id: str | None
    attempt_number: int | None
    dry_run: bool
    options: Mapping[str, Any] = field(default_factory=dict)


def parse_scheduled_event(
    event: Any,
    *,
    options: Mapping[str, Option] | None = None,
    allow_dry_run: bool = False,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ScheduledEvent:
    """Validate `event` and return it typed. Raises `InvalidInputError`."""
    options = options or {}
    if event is None:
        event = {}
    if not isinstance(event, Mapping):
        raise InvalidInputError("event", f"must be a JSON object, got {type(event).__name__}")
    allowed = set(COMMON_FIELDS if allow_dry_run else COMMON_FIELDS[:3]) | set(options)
    unknown = sorted(str(k) for k in event if k not in allowed)
    if unknown:
        raise InvalidInputError(unknown[0], f"unknown key (allowed: {', '.join(sorted(allowed))})")

    given = "scheduled_time" in event and event["scheduled_time"] is not None
    scheduled = parse_timestamp("scheduled_time", event["scheduled_time"]) if given else now()
    execution_id = event.get("execution_id")
    if execution_id is not None and not isinstance(execution_id, str):
        raise InvalidInputError("execution_id", f"must be a string, got {type(execution_id).__name__}")
    attempt = event.get("attempt_number")
    attempt_number = None if attempt is None else parse_positive_int("attempt_number", attempt)
    dry_run = parse_bool("dry_run", event.get("dry_run", False))
    for name, spec in options.items():
        if spec.required and name not in event:
            raise InvalidInputError(name, "is required")
    parsed = {
        name: (spec.parse(name, event[name]) if name in event else spec.default)
        for name, spec in options.items()
    }
    return ScheduledEvent(
        scheduled_time=scheduled.astimezone(UTC),
        scheduled_time_given=given,
        execution_id=execution_id,
        attempt_number=attempt_number,
        dry_run=dry_run,
        options=parsed,
    )


def parse_timestamp(name: str, value: Any) -> datetime:
    """An ISO-8601 timestamp with a time zone (Scheduler sends ``...Z``)."""
    if not isinstance(value, str):
        raise InvalidInputError(name, f"must be an ISO-8601 timestamp string, got {type(value).__name__}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(name, f"is not an ISO-8601 timestamp: {value!r}") from None
    if parsed.tzinfo is None:
        raise InvalidInputError(name, f"must carry a time zone (e.g. 2026-11-23T09:00:00Z), got {value!r}")
    return parsed.astimezone(UTC)


def parse_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(name, f"must be true or false, got {value!r}")
    return value


def parse_positive_int(name: str, value: Any, maximum: int | None = None) -> int:
    """A positive integer; numeric strings are accepted because Scheduler
    substitutes its placeholders as text."""
    number: int
    if isinstance(value, bool):
        raise InvalidInputError(name, f"must be a positive integer, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise InvalidInputError(name, f"must be a positive integer, got {value!r}")
    if number < 1:
        raise InvalidInputError(name, f"must be at least 1, got {number}")
    if maximum is not None and number > maximum:
        raise InvalidInputError(name, f"must be at most {maximum}, got {number}")
    return number


def positive_int(maximum: int | None = None) -> Callable[[str, Any], int]:
    """An `Option` parser for a bounded positive integer."""

    def parse(name: str, value: Any) -> int:
        return parse_positive_int(name, value, maximum)

    return parse
