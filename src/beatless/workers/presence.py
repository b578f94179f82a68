"""Which workers there are and what they do, without asking them.

Each worker writes its own line every few seconds (`publish`: the worker's presence
bootstep) into one Redis hash, `beatless:workers`: field = the worker's name, value =
JSON `{"state": "idle"|"busy", "protected": bool|null, "tasks": n, "queues": [...],
"at": epoch seconds}`. Readers (`read`: the task API's `/stats`, the local view) get
every worker in one round trip instead of a broadcast every worker must answer; a
line older than `stale_seconds` is a worker that stopped without saying so and is
removed by the reader. A stopping worker deletes its own line (`withdraw`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

KEY = "beatless:workers"
DEFAULT_STALE_SECONDS = 30.0


@dataclass(frozen=True)
class WorkerPresence:
    name: str
    state: str  # idle | busy
    protected: bool | None  # None: scale-in protection is off (not on ECS)
    tasks: int
    queues: tuple[str, ...]
    at: float

    def age(self, now: float) -> float:
        return max(0.0, now - self.at)


def publish(
    client: Any,
    name: str,
    *,
    tasks: int,
    protected: bool | None,
    queues: Sequence[str],
    now: float | None = None,
) -> None:
    line = {
        "state": "busy" if tasks else "idle",
        "protected": protected,
        "tasks": tasks,
        "queues": list(queues),
        "at": time.time() if now is None else now,
    }
    client.hset(KEY, name, json.dumps(line))


def withdraw(client: Any, name: str) -> None:
    client.hdel(KEY, name)


def read(
    client: Any, *, now: float | None = None, stale_seconds: float = DEFAULT_STALE_SECONDS
) -> list[WorkerPresence]:
    """The live workers, by name; stale lines are removed."""
    now = time.time() if now is None else now
    live: list[WorkerPresence] = []
    stale: list[str] = []
    for raw_name, raw in client.hgetall(KEY).items():
        name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
        worker = _parse(name, raw)
        if worker is None or worker.age(now) > stale_seconds:
            stale.append(name)
        else:
            live.append(worker)
    if stale:
        client.hdel(KEY, *stale)
    return sorted(live, key=lambda w: w.name)


def _parse(name: str, raw: Any) -> WorkerPresence | None:
    """The line a worker wrote, or None for anything else."""
    try:
        line = json.loads(raw)
        return WorkerPresence(
            name=name,
            state=str(line["state"]),
            protected=line.get("protected"),
            tasks=int(line["tasks"]),
            queues=tuple(line.get("queues") or ()),
            at=float(line["at"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
