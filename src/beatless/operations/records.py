"""The `operations` table (migration 0004): one row per operation id, the durable
state that makes a heavy task idempotent however often it is delivered.

Lock order: the operation's row first (`FOR UPDATE`), then the credit API's own
(hold, account) — so starting, finishing and taking over never deadlock each other
or the reservation cleanup, which never touches this table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from beatless import credits
from beatless.credits.errors import IdempotencyConflictError
from beatless.db.arguments import Conn
from beatless.errors import BeatlessError
from beatless.operations import launches

_COLUMNS = (
    "id, task, params, account_id, status, attempts, task_id, hold_operation_id, estimated_micro, "
    "charged_micro, stage, result, error, lease_expires_at, cancel_requested_at, created_at, "
    "updated_at, finished_at"
)


class LeaseLostError(BeatlessError):
    """Another attempt took this operation over (this one was presumed dead): its result
    and charge are that attempt's."""


@dataclass(frozen=True)
class OperationRecord:
    id: str
    task: str
    params: dict[str, Any]
    account_id: int
    status: str  # running | succeeded | failed | cancelled
    attempts: int
    task_id: str | None
    hold_operation_id: str | None
    estimated_micro: int
    charged_micro: int | None
    stage: str | None
    result: dict[str, Any] | None
    error: str | None
    lease_expires_at: datetime | None
    cancel_requested_at: datetime | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


def _record(row: Any) -> OperationRecord:
    return OperationRecord(*row)


@dataclass(frozen=True)
class Started:
    """What `start` decided: run `attempt`, or the operation `succeeded` before (its
    record holds the result), or another attempt is alive (`busy`: wait, then ask again)."""

    record: OperationRecord
    outcome: str  # run | succeeded | busy

    @property
    def attempt(self) -> int:
        return self.record.attempts


def hold_key(operation_id: str, attempt: int) -> str:
    return operation_id if attempt == 1 else f"{operation_id}#{attempt}"


def start(
    conn: Conn,
    *,
    operation_id: str,
    task: str,
    params: Mapping[str, Any],
    account_id: int,
    estimated_micro: int,
    task_id: str | None,
    lease: timedelta,
    hold_for: timedelta,
) -> Started:
    """Begin an attempt of `operation_id`, holding `estimated_micro` of the account.

    Refuses (`IdempotencyConflictError`, field `operation_id`) an id already used for
    another task, parameters or account, (`InsufficientCreditsError`) an account
    without the available credits, and (`launches.TaskRevokedError`) a delivery whose
    task was revoked — then nothing is recorded."""
    with conn.transaction():
        revoked = launches.is_revoked(conn, task_id)  # first: the order `launches.revoke` locks in
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM operations WHERE id = %s FOR UPDATE", (operation_id,)
        ).fetchone()
        if not revoked:
            return _start_locked(
                conn, row, operation_id=operation_id, task=task, params=params, account_id=account_id,
                estimated_micro=estimated_micro, task_id=task_id, lease=lease, hold_for=hold_for,
            )  # fmt: skip
        _end_dead_revoked_attempt(conn, row, task_id)
    raise launches.TaskRevokedError(f"task {task_id} was revoked before it started")


def _start_locked(
    conn: Conn,
    row: Any,
    *,
    operation_id: str,
    task: str,
    params: Mapping[str, Any],
    account_id: int,
    estimated_micro: int,
    task_id: str | None,
    lease: timedelta,
    hold_for: timedelta,
) -> Started:
    """`start` inside its transaction, the operation's row (if any) locked."""
    if row is None:
        inserted = conn.execute(
            "INSERT INTO operations (id, task, params, account_id, estimated_micro, task_id, "
            "hold_operation_id, lease_expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, now() + %s) "
            f"ON CONFLICT (id) DO NOTHING RETURNING {_COLUMNS}",
            (
                operation_id,
                task,
                json.dumps(params),
                account_id,
                estimated_micro,
                task_id,
                hold_key(operation_id, 1) if estimated_micro else None,
                lease,
            ),
        ).fetchone()
        if inserted is None:  # a twin inserted it first: decide on its row
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM operations WHERE id = %s FOR UPDATE", (operation_id,)
            ).fetchone()
        else:
            record = _record(inserted)
            _reserve(conn, record, hold_for)
            return Started(record, "run")
    record = _record(row)
    _same_operation(record, task, params, account_id)
    if record.status == "succeeded":
        return Started(record, "succeeded")
    if record.status == "running":
        alive = conn.execute("SELECT %s > now()", (record.lease_expires_at,)).fetchone()[0]
        if alive:
            return Started(record, "busy")
        if record.hold_operation_id is not None:  # the dead attempt's hold, unless expired already
            credits.release(conn, record.account_id, record.hold_operation_id)
    attempt = record.attempts + 1
    taken = conn.execute(
        "UPDATE operations SET status = 'running', attempts = %s, task_id = %s, hold_operation_id = %s, "
        "estimated_micro = %s, charged_micro = NULL, stage = NULL, result = NULL, error = NULL, "
        "lease_expires_at = now() + %s, cancel_requested_at = NULL, updated_at = now(), "
        f"finished_at = NULL WHERE id = %s RETURNING {_COLUMNS}",
        (
            attempt,
            task_id,
            hold_key(operation_id, attempt) if estimated_micro else None,
            estimated_micro,
            lease,
            operation_id,
        ),
    ).fetchone()
    record = _record(taken)
    _reserve(conn, record, hold_for)
    return Started(record, "run")


def _end_dead_revoked_attempt(conn: Conn, row: Any, task_id: str | None) -> None:
    """A revoked task redelivered after its worker died: its attempt (still `running`, lease
    lapsed) ends `cancelled` and its hold is released, so the operation can be retried."""
    if row is None:
        return
    record = _record(row)
    if record.status != "running" or record.task_id != task_id:
        return
    if conn.execute("SELECT %s > now()", (record.lease_expires_at,)).fetchone()[0]:
        return  # alive: it sees the cancellation at its next stage boundary
    if record.hold_operation_id is not None:
        credits.release(conn, record.account_id, record.hold_operation_id)
    conn.execute(
        "UPDATE operations SET status = 'cancelled', error = %s, lease_expires_at = NULL, "
        "updated_at = now(), finished_at = now() WHERE id = %s",
        (f"task {task_id} was revoked; its attempt {record.attempts} had died", record.id),
    )


def _same_operation(record: OperationRecord, task: str, params: Mapping[str, Any], account_id: int) -> None:
    if (
        record.task != task
        or record.params != json.loads(json.dumps(params))
        or record.account_id != account_id
    ):
        raise IdempotencyConflictError(
            "operation_id",
            f"operation {record.id!r} was started as {record.task} with other parameters "
            f"({json.dumps(record.params, sort_keys=True)[:300]}) on account {record.account_id}",
        )


def _reserve(conn: Conn, record: OperationRecord, hold_for: timedelta) -> None:
    if record.hold_operation_id is None:
        return
    expires_at = conn.execute("SELECT now() + %s", (hold_for,)).fetchone()[0]
    credits.reserve(conn, record.account_id, record.hold_operation_id, record.estimated_micro, expires_at)


def renew_lease(conn: Conn, operation_id: str, attempt: int, lease: timedelta) -> bool:
    """Extend the running attempt's lease; False when it is no longer this attempt's."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE operations SET lease_expires_at = now() + %s, updated_at = now() "
            "WHERE id = %s AND attempts = %s AND status = 'running' RETURNING 1",
            (lease, operation_id, attempt),
        ).fetchone()
    return row is not None


def record_stage(conn: Conn, operation_id: str, attempt: int, stage: str) -> bool:
    """Note the stage reached; True when a cancellation was requested (checked at this boundary)."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE operations SET stage = %s, updated_at = now() WHERE id = %s AND attempts = %s "
            "AND status = 'running' RETURNING cancel_requested_at IS NOT NULL",
            (stage, operation_id, attempt),
        ).fetchone()
    if row is None:
        raise LeaseLostError(f"operation {operation_id!r}: attempt {attempt} is no longer the running one")
    return bool(row[0])


def succeed(
    conn: Conn, operation_id: str, attempt: int, result: Mapping[str, Any], charged_micro: int
) -> OperationRecord:
    """Commit the attempt's hold (`charged_micro` of it) and record the result, in one
    transaction: a second attempt can never charge again."""
    with conn.transaction():
        record = _locked_attempt(conn, operation_id, attempt)
        if record.hold_operation_id is not None:
            credits.commit(conn, record.account_id, record.hold_operation_id, charged_micro)
        row = conn.execute(
            "UPDATE operations SET status = 'succeeded', result = %s, charged_micro = %s, stage = 'done', "
            "lease_expires_at = NULL, updated_at = now(), finished_at = now() WHERE id = %s "
            f"RETURNING {_COLUMNS}",
            (json.dumps(result), charged_micro if record.hold_operation_id else 0, operation_id),
        ).fetchone()
        return _record(row)


def finish_unsuccessfully(
    conn: Conn, operation_id: str, attempt: int, status: str, error: str
) -> OperationRecord:
    """`failed` or `cancelled`: release the attempt's hold, record why."""
    assert status in ("failed", "cancelled")
    with conn.transaction():
        record = _locked_attempt(conn, operation_id, attempt)
        if record.hold_operation_id is not None:
            credits.release(conn, record.account_id, record.hold_operation_id)
        row = conn.execute(
            "UPDATE operations SET status = %s, error = %s, lease_expires_at = NULL, updated_at = now(), "
            f"finished_at = now() WHERE id = %s RETURNING {_COLUMNS}",
            (status, error[:2000], operation_id),
        ).fetchone()
        return _record(row)


def _locked_attempt(conn: Conn, operation_id: str, attempt: int) -> OperationRecord:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM operations WHERE id = %s FOR UPDATE", (operation_id,)
    ).fetchone()
    if row is None:
        raise LeaseLostError(f"operation {operation_id!r} has no record")
    record = _record(row)
    if record.attempts != attempt or record.status != "running":
        raise LeaseLostError(
            f"operation {operation_id!r}: attempt {attempt} is not the running one "
            f"(attempt {record.attempts} is {record.status})"
        )
    return record


def request_cancel(conn: Conn, operation_id: str) -> OperationRecord | None:
    """Ask the running attempt to stop at its next stage boundary; its record, or None
    when the operation is not running (unknown, or finished already)."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE operations SET cancel_requested_at = coalesce(cancel_requested_at, now()), "
            f"updated_at = now() WHERE id = %s AND status = 'running' RETURNING {_COLUMNS}",
            (operation_id,),
        ).fetchone()
    return None if row is None else _record(row)


def get(conn: Conn, operation_id: str) -> OperationRecord | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM operations WHERE id = %s", (operation_id,)).fetchone()
    return None if row is None else _record(row)
