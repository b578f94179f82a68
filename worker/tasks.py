"""The worker's tasks; `register` adds them to an app.

Trigger: a message on one of the worker's queues (by default ``default``).
Side effects: each task applies one effect, at most once per task id: it adds
``amount`` to the counter ``subject`` in the Redis hash `TOTALS_KEY` and
appends the task id to the journal list `JOURNAL_KEY`, in one Lua script
guarded by ``HSETNX`` on `APPLIED_KEY`. A redelivered message (same task id)
therefore changes nothing and reports ``applied: false``.

This Redis effect store exists to exercise redelivery and shutdown safety;
the graph and ingestion tasks (later) keep their exactly-once effects in
PostgreSQL. The applied-id hash is not trimmed yet.

Both tasks run with ``acks_late``: a task interrupted by a shutdown or a
lost worker runs again from the start on another worker.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import redis
from celery import Celery, Task

from beatless.errors import InvalidInputError

LONG_RUNNING = "beatless.long_running"
RECORD_EFFECT = "beatless.record_effect"

APPLIED_KEY = "beatless:effects:applied"
TOTALS_KEY = "beatless:effects:totals"
JOURNAL_KEY = "beatless:effects:journal"
JOURNAL_LENGTH = 10_000

LONG_RUNNING_TIME_LIMIT = 3600
LONG_RUNNING_SOFT_TIME_LIMIT = 3300
RECORD_EFFECT_TIME_LIMIT = 60
RECORD_EFFECT_SOFT_TIME_LIMIT = 50
MAX_STEP_SECONDS = 60.0

# KEYS: applied, totals, journal; ARGV: task id, subject, amount, record, journal length
_APPLY_ONCE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[4]) == 0 then
  return {0, tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')}
end
local total = redis.call('HINCRBY', KEYS[2], ARGV[2], ARGV[3])
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[5]), -1)
return {1, total}
"""

_clients: dict[int, redis.Redis] = {}
_clients_lock = threading.Lock()


def _redis(app: Celery) -> redis.Redis:
    """One Redis client per app and process (pool processes fork after import)."""
    key = id(app)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            settings = app.settings  # a worker.app.BeatlessCelery
            client = redis.Redis.from_url(
                settings.broker_url,
                password=settings.broker_password,
                socket_timeout=10,
                socket_connect_timeout=5,
            )
            _clients[key] = client
        return client


def apply_once(client: redis.Redis, task_id: str, subject: str, amount: int) -> dict[str, Any]:
    """Apply the effect of task `task_id` unless it was applied before."""
    record = json.dumps({"subject": subject, "amount": amount, "at": time.time()})
    applied, total = client.eval(
        _APPLY_ONCE, 3, APPLIED_KEY, TOTALS_KEY, JOURNAL_KEY, task_id, subject, amount, record, JOURNAL_LENGTH
    )
    return {"applied": bool(applied), "subject": subject, "total": int(total)}


def _check_effect_args(subject: object, amount: object) -> tuple[str, int]:
    if not isinstance(subject, str) or not subject or len(subject) > 200:
        raise InvalidInputError(
            "subject", f"must be a non-empty string of at most 200 characters, got {subject!r}"
        )
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidInputError("amount", f"must be an integer, got {amount!r}")
    return subject, amount


def long_running(
    task: Task, steps: int, step_seconds: float, subject: str = "long_running", amount: int = 1
) -> dict[str, Any]:
    """Works in `steps` steps of `step_seconds`, reporting progress, then applies its effect once."""
    subject, amount = _check_effect_args(subject, amount)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidInputError("steps", f"must be a positive integer, got {steps!r}")
    if isinstance(step_seconds, bool) or not isinstance(step_seconds, int | float):
        raise InvalidInputError("step_seconds", f"must be a number, got {step_seconds!r}")
    if not 0 <= step_seconds <= MAX_STEP_SECONDS:
        raise InvalidInputError(
            "step_seconds", f"must be between 0 and {MAX_STEP_SECONDS:g}, got {step_seconds}"
        )
    if steps * step_seconds > LONG_RUNNING_SOFT_TIME_LIMIT:
        raise InvalidInputError(
            "steps",
            f"{steps} steps of {step_seconds:g} s exceed the task's soft time limit "
            f"({LONG_RUNNING_SOFT_TIME_LIMIT} s)",
        )
    for done in range(1, steps + 1):
        time.sleep(step_seconds)
        task.update_state(state="PROGRESS", meta={"done": done, "total": steps})
    task_id = task.request.id
    assert task_id is not None
    return {"steps": steps, **apply_once(_redis(task.app), task_id, subject, amount)}


def record_effect(task: Task, subject: str, amount: int = 1) -> dict[str, Any]:
    """Adds `amount` to `subject` once per task id, however often the message is delivered."""
    subject, amount = _check_effect_args(subject, amount)
    task_id = task.request.id
    assert task_id is not None
    return apply_once(_redis(task.app), task_id, subject, amount)


def register(app: Celery) -> None:
    app.task(
        name=LONG_RUNNING,
        bind=True,
        time_limit=LONG_RUNNING_TIME_LIMIT,
        soft_time_limit=LONG_RUNNING_SOFT_TIME_LIMIT,
    )(long_running)
    app.task(
        name=RECORD_EFFECT,
        bind=True,
        time_limit=RECORD_EFFECT_TIME_LIMIT,
        soft_time_limit=RECORD_EFFECT_SOFT_TIME_LIMIT,
    )(record_effect)
