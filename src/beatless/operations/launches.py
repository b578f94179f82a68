"""Tasks: the launches of operations through the task API (table `tasks`, migration 0006).

A task is one Celery message of one operation; its id is the Celery task id. Launching
an operation id a second time returns its first task; retrying a failed or revoked task
makes one new task of the same operation (retrying it again returns that one).

Revocation is recorded on the task's row. A worker starting an attempt locks the row
(`FOR SHARE`, `is_revoked`) before it touches the operation; `revoke` locks it
`FOR UPDATE`, then asks a running attempt of the operation to stop. So a revocation is
either seen by the starting worker (the task ends REVOKED without running) or finds the
attempt running and stops it at its next stage boundary — never lost between the two.
Messages not launched through the API (the ingestion queue processor's, the demo's)
have no row and cannot be revoked this way.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beatless.db.arguments import Conn
from beatless.errors import BeatlessError

_COLUMNS = (
    "id, operation_id, task_type, params, queue, priority, retry_of, revoked_at, sent_at, state, error, "
    "finished_at, created_at"
)


class TaskRevokedError(BeatlessError):
    """The task was revoked before its attempt started."""


@dataclass(frozen=True)
class Task:
    id: str
    operation_id: str
    task_type: str
    params: dict[str, Any]
    queue: str
    priority: int
    retry_of: str | None
    revoked_at: datetime | None
    sent_at: datetime | None  # its message was put on the queue
    state: str | None  # how its delivery ended (SUCCESS, FAILURE, REVOKED), None before
    error: str | None
    finished_at: datetime | None
    created_at: datetime


def _task(row: Any) -> Task:
    return Task(*row)


def new_task_id() -> str:
    return str(uuid.uuid4())


def launch(
    conn: Conn, *, operation_id: str, task_type: str, params: Mapping[str, Any], queue: str, priority: int
) -> tuple[Task, bool]:
    """The operation's first task, recorded now (True) or found (False: launched before)."""
    row = conn.execute(
        "INSERT INTO tasks (id, operation_id, task_type, params, queue, priority) "
        "VALUES (%s, %s, %s, %s, %s, %s) "
        f"ON CONFLICT (operation_id) WHERE retry_of IS NULL DO NOTHING RETURNING {_COLUMNS}",
        (new_task_id(), operation_id, task_type, json.dumps(params), queue, priority),
    ).fetchone()
    if row is not None:
        return _task(row), True
    first = conn.execute(
        f"SELECT {_COLUMNS} FROM tasks WHERE operation_id = %s AND retry_of IS NULL", (operation_id,)
    ).fetchone()
    return _task(first), False


def retry(conn: Conn, task: Task) -> tuple[Task, bool]:
    """The one retry of `task` (same operation, parameters, queue and priority), recorded now
    (True) or found (False)."""
    row = conn.execute(
        f"INSERT INTO tasks (id, operation_id, task_type, params, queue, priority, retry_of) "
        f"VALUES (%s, %s, %s, %s, %s, %s, %s) "
        f"ON CONFLICT (retry_of) WHERE retry_of IS NOT NULL DO NOTHING RETURNING {_COLUMNS}",
        (
            new_task_id(),
            task.operation_id,
            task.task_type,
            json.dumps(task.params),
            task.queue,
            task.priority,
            task.id,
        ),
    ).fetchone()
    if row is not None:
        return _task(row), True
    found = conn.execute(f"SELECT {_COLUMNS} FROM tasks WHERE retry_of = %s", (task.id,)).fetchone()
    return _task(found), False


def find_retry(conn: Conn, task_id: str) -> Task | None:
    """The retry of `task_id`, if it has one."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM tasks WHERE retry_of = %s", (task_id,)).fetchone()
    return None if row is None else _task(row)


def mark_sent(conn: Conn, task_id: str) -> None:
    conn.execute("UPDATE tasks SET sent_at = coalesce(sent_at, now()) WHERE id = %s", (task_id,))


def finish(conn: Conn, task_id: str, state: str, error: str | None = None) -> None:
    """Record how the task's delivery ended (the first end recorded stays; no row: not an API
    task, nothing to do)."""
    conn.execute(
        "UPDATE tasks SET state = %s, error = %s, finished_at = now() WHERE id = %s AND state IS NULL",
        (state, None if error is None else error[:2000], task_id),
    )


def get(conn: Conn, task_id: str) -> Task | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM tasks WHERE id = %s", (task_id,)).fetchone()
    return None if row is None else _task(row)


def latest(conn: Conn, operation_id: str) -> Task | None:
    """The operation's newest task (its last retry, else its first launch)."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM tasks WHERE operation_id = %s ORDER BY created_at DESC, id LIMIT 1",
        (operation_id,),
    ).fetchone()
    return None if row is None else _task(row)


def revoke(conn: Conn, task_id: str) -> Task | None:
    """Mark the task revoked and ask a running attempt of its operation to stop (one
    transaction); the task, or None when there is no such task."""
    from beatless.operations import records

    with conn.transaction():
        row = conn.execute(
            f"UPDATE tasks SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s RETURNING {_COLUMNS}",
            (task_id,),
        ).fetchone()
        if row is None:
            return None
        task = _task(row)
        running = records.get(conn, task.operation_id)
        if running is not None and running.status == "running" and running.task_id == task.id:
            records.request_cancel(conn, task.operation_id)
    return task


def is_revoked(conn: Conn, task_id: str | None) -> bool:
    """Inside the transaction that starts an attempt: whether the delivering task was revoked.
    Its row stays locked (FOR SHARE) until that transaction ends, so a revocation waits for
    the attempt to be recorded (and then finds it running)."""
    if not task_id:
        return False
    row = conn.execute("SELECT revoked_at FROM tasks WHERE id = %s FOR SHARE", (task_id,)).fetchone()
    return row is not None and row[0] is not None
