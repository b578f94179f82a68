"""The one runtime under every heavy task: `run_operation`.

Order (DESIGN.md §3 "Operations"): validate the parameters -> derive or check
the operation id -> start an attempt (the `operations` row; the estimated cost
held on the paying account — refused before any work when the account lacks the
credits) -> the core works in stages (`Operation.stage`: progress after each,
cancellation checked at each boundary) -> the actual cost committed with the
result in one transaction -> on failure or cancellation the hold released.

A delivery of an operation that succeeded returns its recorded result and runs
nothing; a delivery while another attempt is alive waits for it (its lease);
a delivery after an attempt died (its lease lapsed) takes over as a new attempt
— the cores are written so that a new attempt finds what the dead one did and
completes it (idempotent effects), and the credits are charged once.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from beatless.errors import BeatlessError, InvalidInputError
from beatless.operations import launches, records
from beatless.operations.ids import check_operation_id, derive_operation_id
from beatless.operations.launches import TaskRevokedError
from beatless.operations.progress import ProgressStream

if TYPE_CHECKING:
    from beatless.operations.catalogue import OperationSpec

log = logging.getLogger("beatless.operations")

DEFAULT_LEASE_SECONDS = 60  # a dead attempt's operation is taken over this long after its last sign
BUSY_POLL_SECONDS = 1.0


class OperationCancelledError(BeatlessError):
    """The operation was asked to stop; it stopped at a stage boundary."""


class Resources(Protocol):
    """What the runtime itself needs; cores get more through `Operation.resources`."""

    def database(self) -> Any: ...  # a psycopg connection (autocommit), kept by the caller

    def lease_database(self) -> Any: ...  # a second connection, for the lease thread

    def progress_client(self) -> Any: ...  # a redis.Redis


ProgressCallback = Callable[[Mapping[str, Any]], None]


@dataclass
class Operation:
    """What a core sees of the operation it runs."""

    operation_id: str
    attempt: int
    task_id: str
    resources: Any
    progress: ProgressStream
    _conn: Any
    _report: ProgressCallback | None = None
    stages: list[str] = field(default_factory=list)

    def stage(self, name: str, percent: float, message: str = "") -> None:
        """A stage boundary: stop here if a cancellation was requested, else report `name`."""
        self.stages.append(name)
        if records.record_stage(self._conn, self.operation_id, self.attempt, name):
            raise OperationCancelledError(f"operation {self.operation_id} cancelled before {name!r}")
        self.report(name, percent, message)

    def report(self, stage: str, percent: float, message: str = "", state: str = "running") -> None:
        """Progress without a boundary (inside a long stage). Never raises."""
        self.progress.publish(
            state=state,
            stage=stage,
            percent=percent,
            message=message,
            attempt=self.attempt,
            task_id=self.task_id,
        )
        if self._report is not None:
            try:
                self._report({"state": state, "stage": stage, "percent": percent, "message": message})
            except Exception as error:  # a Redis hiccup in the result backend never fails the task
                log.warning("task state of %s not updated: %s", self.operation_id, error)


def parse_params(spec: OperationSpec, raw: Any) -> dict[str, Any]:
    """The parameters validated by the spec's model, defaults filled, as plain JSON data.
    Raises `InvalidInputError` naming the first field at fault (`params.<field>`)."""
    from pydantic import ValidationError

    if not isinstance(raw, Mapping):
        raise InvalidInputError("params", f"must be an object, got {type(raw).__name__}")
    try:
        model = spec.params.model_validate(dict(raw))
    except ValidationError as error:
        first = error.errors()[0]
        cause = first.get("ctx", {}).get("error")
        if isinstance(cause, InvalidInputError):  # a validator's own check names the nested field
            raise InvalidInputError(f"params.{cause.field}", cause.problem) from None
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"])
        raise InvalidInputError(f"params{where}", first["msg"]) from None
    data: dict[str, Any] = model.model_dump(mode="json")
    return data


@dataclass(frozen=True)
class Outcome:
    operation_id: str
    attempt: int
    status: str  # succeeded (now or before)
    charged_micro: int
    result: dict[str, Any]
    replayed: bool  # True: succeeded before; nothing ran

    def summary(self) -> dict[str, Any]:
        return {
            "operation_id": self.operation_id,
            "attempt": self.attempt,
            "status": self.status,
            "charged_micro": self.charged_micro,
            "replayed": self.replayed,
            "result": self.result,
        }


def run_operation(
    spec: OperationSpec,
    raw_params: Any,
    *,
    resources: Any,
    operation_id: str | None = None,
    task_id: str = "",
    report: ProgressCallback | None = None,
) -> Outcome:
    """Run one delivery of an operation (see the module docstring). How it ended is also
    written on its task's row (`launches.finish`; tasks launched through the API have one),
    durable where Celery's stored state expires."""
    try:
        outcome = _run_operation(
            spec, raw_params, resources=resources, operation_id=operation_id, task_id=task_id, report=report
        )
    except OperationCancelledError as cancelled:
        _task_ended(resources, task_id, "REVOKED", str(cancelled))
        raise
    except Exception as error:
        _task_ended(resources, task_id, "FAILURE", "".join(traceback.format_exception_only(error)).strip())
        raise
    _task_ended(resources, task_id, "SUCCESS")
    return outcome


def _task_ended(resources: Any, task_id: str, state: str, error: str | None = None) -> None:
    """Best effort: the operation's own record is what counts; a database that cannot take
    this is logged (Celery's stored state still says it, for a day)."""
    if not task_id:
        return
    try:
        launches.finish(resources.database(), task_id, state, error)
    except Exception as failed:
        log.warning("task %s: its end (%s) not recorded on its row: %s", task_id, state, failed)


def _run_operation(
    spec: OperationSpec,
    raw_params: Any,
    *,
    resources: Any,
    operation_id: str | None,
    task_id: str,
    report: ProgressCallback | None,
) -> Outcome:
    params = parse_params(spec, raw_params)
    op_id = (
        check_operation_id(operation_id)
        if operation_id is not None
        else derive_operation_id(spec.name, params)
    )
    conn = resources.database()
    account_id = spec.paying_account(conn, params)
    estimate = spec.cost.estimate_micro(spec.units(resources, params))
    deadline = time.monotonic() + spec.time_limit
    while True:
        try:
            started = records.start(
                conn,
                operation_id=op_id,
                task=spec.name,
                params=params,
                account_id=account_id,
                estimated_micro=estimate,
                task_id=task_id or None,
                lease=timedelta(seconds=lease_seconds(resources)),
                hold_for=timedelta(seconds=spec.hold_seconds),
            )
        except TaskRevokedError as revoked:
            raise OperationCancelledError(str(revoked)) from None
        if started.outcome != "busy":
            break
        if time.monotonic() > deadline:
            raise BeatlessError(f"operation {op_id}: attempt {started.attempt} is still running")
        time.sleep(BUSY_POLL_SECONDS)
    record = started.record
    if started.outcome == "succeeded":
        assert record.result is not None and record.charged_micro is not None
        return Outcome(op_id, record.attempts, "succeeded", record.charged_micro, record.result, True)

    attempt = record.attempts
    progress = ProgressStream(resources.progress_client(), op_id)
    operation = Operation(op_id, attempt, task_id, resources, progress, conn, report)
    with _Lease(resources, op_id, attempt):
        try:
            operation.report("started", 0, f"attempt {attempt}")
            result = spec.core()(operation, params)
            units = spec.charged_units(params, result)
            charged = min(spec.cost.actual_micro(units), estimate)
            done = records.succeed(conn, op_id, attempt, result, charged)
        except OperationCancelledError as cancelled:
            _finish(conn, operation, "cancelled", str(cancelled))
            raise
        except BaseException as error:
            _finish(conn, operation, "failed", "".join(traceback.format_exception_only(error)).strip())
            raise
    operation.report("done", 100, "", state="succeeded")
    assert done.charged_micro is not None
    return Outcome(op_id, attempt, "succeeded", done.charged_micro, result, False)


def lease_seconds(resources: Any) -> int:
    """The resources' lease (`OPERATION_LEASE_SECONDS`), else the default."""
    return int(getattr(resources, "lease_seconds", DEFAULT_LEASE_SECONDS))


def _finish(conn: Any, operation: Operation, status: str, error: str) -> None:
    """Record a failed or cancelled attempt (hold released); the original error is what
    the caller raises, so a failure to record it is logged, never raised over it."""
    try:
        records.finish_unsuccessfully(conn, operation.operation_id, operation.attempt, status, error)
    except Exception as recording:
        log.error("operation %s: %s not recorded: %s", operation.operation_id, status, recording)
    operation.report(operation.stages[-1] if operation.stages else "started", 0, error[:500], state=status)


class _Lease:
    """Renews the attempt's lease on a thread of its own (its own connection) while the
    attempt lives: a process that dies stops renewing, and its operation is taken over."""

    def __init__(self, resources: Any, operation_id: str, attempt: int) -> None:
        self._resources = resources
        self._operation_id = operation_id
        self._attempt = attempt
        self._lease_seconds = lease_seconds(resources)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{operation_id}", daemon=True)

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        conn = None
        try:
            while not self._stop.wait(self._lease_seconds / 4):  # renewed four times a lease
                try:
                    if conn is None:
                        conn = self._resources.lease_database()
                    lease = timedelta(seconds=self._lease_seconds)
                    if not records.renew_lease(conn, self._operation_id, self._attempt, lease):
                        return  # finished, or taken over
                except Exception as error:  # the next renewal tries again; the lease has slack
                    log.warning("lease of %s not renewed: %s", self._operation_id, error)
                    if conn is not None:
                        conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()
