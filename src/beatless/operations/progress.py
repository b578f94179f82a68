"""Progress of an operation: an ordered, bounded event stream per operation in Redis.

Key `beatless:operations:<operation id>:events`, a Redis stream: each event is
`{"state", "stage", "percent", "message", "attempt", "task_id", "at"}` (strings
on the wire; `read` decodes them). Every append trims the stream to its last
`max_events` entries (exactly: a reader resuming from an id never skips
silently more than what the cap removed) and renews its TTL, in one round trip.
Readers resume after an id (`Last-Event-ID` in server-sent events), while the
operation runs and after it ended, until the TTL passes.

Reporting is best effort: a Redis error while publishing is logged and
counted, never raised — progress must not fail the work it reports on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from beatless.timestamps import iso_z

log = logging.getLogger("beatless.operations.progress")

KEY_PREFIX = "beatless:operations:"
DEFAULT_MAX_EVENTS = 1000
DEFAULT_TTL_SECONDS = 7 * 24 * 3600


def stream_key(operation_id: str) -> str:
    return f"{KEY_PREFIX}{operation_id}:events"


@dataclass(frozen=True)
class ProgressEvent:
    id: str  # the stream entry id: ordered, resumable
    state: str
    stage: str
    percent: float
    message: str
    attempt: int
    task_id: str
    at: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "stage": self.stage,
            "percent": self.percent,
            "message": self.message,
            "attempt": self.attempt,
            "task_id": self.task_id,
            "at": self.at,
        }


@dataclass
class ProgressStream:
    """Appends to and reads one operation's stream."""

    client: redis.Redis
    operation_id: str
    max_events: int = DEFAULT_MAX_EVENTS
    ttl_seconds: int = DEFAULT_TTL_SECONDS
    failures: int = field(default=0, init=False)  # appends that Redis refused or lost

    @property
    def key(self) -> str:
        return stream_key(self.operation_id)

    def publish(
        self,
        *,
        state: str,
        stage: str,
        percent: float,
        message: str = "",
        attempt: int = 1,
        task_id: str = "",
    ) -> str | None:
        """Append one event; its id, or None when Redis could not take it (logged)."""
        fields = {
            "state": state,
            "stage": stage,
            "percent": f"{max(0.0, min(100.0, percent)):g}",
            "message": message,
            "attempt": str(attempt),
            "task_id": task_id,
            "at": iso_z(datetime.now(UTC)),
        }
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(self.key, fields, maxlen=self.max_events, approximate=False)  # type: ignore[arg-type]
            pipe.expire(self.key, self.ttl_seconds)
            entry_id, _ = pipe.execute()
        except redis.RedisError as error:
            self.failures += 1
            log.warning(
                "progress of %s not recorded (%s: %s)", self.operation_id, type(error).__name__, error
            )
            return None
        return _text(entry_id)

    def read(self, after: str = "0-0", count: int = 100, block_ms: int | None = None) -> list[ProgressEvent]:
        """Events after the entry id `after`, oldest first (raises on Redis errors: a reader can retry)."""
        entries: Any
        if block_ms is None:
            entries = self.client.xrange(self.key, min=f"({after}", count=count)
        else:
            found: Any = self.client.xread({self.key: after}, count=count, block=block_ms)
            entries = found[0][1] if found else []
        return [_event(entry_id, values) for entry_id, values in entries]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _event(entry_id: Any, values: Mapping[Any, Any]) -> ProgressEvent:
    data = {_text(k): _text(v) for k, v in values.items()}
    return ProgressEvent(
        id=_text(entry_id),
        state=data.get("state", ""),
        stage=data.get("stage", ""),
        percent=float(data.get("percent", "0")),
        message=data.get("message", ""),
        attempt=int(data.get("attempt", "1")),
        task_id=data.get("task_id", ""),
        at=data.get("at", ""),
    )
