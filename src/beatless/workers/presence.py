"""Which workers there are and what they do, without asking them.

Each worker writes its own line every few seconds (`publish`: the worker's presence
bootstep) into one Redis hash, `beatless:workers`: field = the worker's name, value =
JSON `{"state": "idle"|"busy", "protected": bool|null, "tasks": n, "queues": [...],
"at": epoch seconds, "every": seconds between its lines}`. Readers (`read`: the task
API's `/stats`, the local view) get every worker in one round trip instead of a
broadcast every worker must answer; a line older than three of its worker's intervals
(and at least `stale_seconds`) is a worker that stopped without saying so, and the
reader removes it — only if it is still that line (a worker that wrote again in between
keeps its new one). A stopping worker deletes its own line (`withdraw`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

KEY = "beatless:workers"
DEFAULT_STALE_SECONDS = 30.0
MISSED_LINES = 3  # lines a worker may miss before it is taken for gone
# KEYS: the hash; ARGV: name, line, name, line, ...: delete each field still holding that line.
_DELETE_IF_UNCHANGED = """
local deleted = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    deleted = deleted + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return deleted
"""


@dataclass(frozen=True)
class WorkerPresence:
    name: str
    state: str  # idle | busy
    protected: bool | None  # None: scale-in protection is off (not on ECS)
    tasks: int
    queues: tuple[str, ...]
    at: float
    every: float = 5.0

    def age(self, now: float) -> float:
        return max(0.0, now - self.at)


def publish(
    client: Any,
    name: str,
    *,
    tasks: int,
    protected: bool | None,
    queues: Sequence[str],
    every: float = 5.0,
    now: float | None = None,
) -> None:
    line = {
        "state": "busy" if tasks else "idle",
        "protected": protected,
        "tasks": tasks,
        "queues": list(queues),
        "at": time.time() if now is None else now,
        "every": every,
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
    stale: list[Any] = []
    for raw_name, raw in client.hgetall(KEY).items():
        name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
        worker = _parse(name, raw)
        if worker is None or worker.age(now) > max(stale_seconds, MISSED_LINES * worker.every):
            stale += [raw_name, raw]
        else:
            live.append(worker)
    if stale:
        client.eval(_DELETE_IF_UNCHANGED, 1, KEY, *stale)
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
            every=float(line.get("every", 5.0)),
        )
    except (ValueError, KeyError, TypeError):
        return None
