"""The task API's core: one method per route, over PostgreSQL (tasks, operations, credits)
and Redis (the queues, progress streams, task states, worker presence).

Nothing here speaks HTTP: errors are `InvalidInputError` (422) and the classes below,
each naming the field at fault; `beatless.api.app` maps them to status codes.

- launch: the task type must be in the catalogue and its parameters valid for it; the
  operation id is given or derived (`beatless.operations.ids`). An operation id launched
  before returns its first task (its message sent again only while it has no state, and
  at most once per task id: `send_once`). A new launch checks the paying account has the
  estimate available (else 402, nothing recorded or sent), records the task, then puts
  its message on the operation's queue.
- state: the operation's record, when its attempt is this task's, wins over Celery's
  stored state (it is durable and knows the credits); a revocation shows at once.
- revoke: `launches.revoke` — the worker that starts the task sees it, or the running
  attempt stops at its next stage boundary.
- retry: a FAILURE or REVOKED task gets one new task of the same operation.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.exceptions

from beatless.api import models
from beatless.errors import BeatlessError, InvalidInputError
from beatless.operations import launches, records
from beatless.operations.catalogue import OPERATIONS, OperationSpec, operation
from beatless.operations.progress import DEFAULT_MAX_EVENTS, ProgressEvent, ProgressStream
from beatless.queues.transport import TransportOptions

log = logging.getLogger("beatless.api")
EVENT_ID_PATTERN = r"^\d{1,20}-\d{1,20}$"
_STREAM_ID = re.compile(EVENT_ID_PATTERN)
MAX_EVENTS_PER_PAGE = 500
ENDED_EVENT_STATES = frozenset({"succeeded", "failed", "cancelled"})
SETTLE_SECONDS = 5.0
# What Redis raises when it does not answer (and the socket errors under it).
REDIS_DOWN = (OSError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
RECENT_FAILURES = 10


class NotFoundError(InvalidInputError):
    """No such task (404)."""


class ConflictError(InvalidInputError):
    """The request contradicts the task's state or an earlier request (409)."""


class PaymentRequiredError(InvalidInputError):
    """The paying account has fewer available credits than the estimate (402)."""


class BrokerUnavailableError(BeatlessError):
    """Redis did not answer (503): nothing was lost; the request can be repeated."""


@dataclass
class TaskApi:
    """The routes' core. `database()` is an autocommit connection, `redis()` the broker's
    client (queues, streams, stored states, presence), `depth()` the monitor's reading of
    every queue (one round trip), `resources` what estimates read (registries, S3)."""

    database: Callable[[], Any]
    redis: Callable[[], Any]
    depth: Callable[[], Any]
    resources: Any
    transport: TransportOptions = field(default_factory=TransportOptions)
    clock: Callable[[], float] = time.time
    # After a message is sent: wakes an idle worker monitor (`beatless.queues.wake`; None: none to wake).
    wake: Callable[[Any, str], bool] | None = None

    # -- launch -----------------------------------------------------------------------------

    def launch(self, request: Any) -> models.Launched:
        """`request`: a `models.LaunchRequest` (one task type's body)."""
        from beatless import credits
        from beatless.operations.ids import check_operation_id, derive_operation_id
        from beatless.operations.runtime import parse_params

        spec = _spec(request.task_type)
        params = parse_params(spec, request.params.model_dump(mode="json"))
        operation_id = (
            check_operation_id(request.operation_id)
            if request.operation_id is not None
            else derive_operation_id(spec.name, params)
        )
        conn = self.database()
        task = launches.latest(conn, operation_id)
        if task is not None:
            return self._relaunched(spec, task, params)
        started = records.get(conn, operation_id)  # started by another producer (a scheduled job)
        if started is not None and (started.task, started.params) != (spec.name, params):
            raise ConflictError(
                "operation_id", f"{operation_id!r} was started as {started.task} with other parameters"
            )
        account = spec.paying_account(conn, params)
        estimate = spec.cost.estimate_micro(spec.units(self.resources, params))
        available = credits.get_account(conn, account).available_micro
        if available < estimate:
            raise PaymentRequiredError(
                "params.graph_id",
                f"the operation needs {estimate / credits.MICRO_PER_CREDIT:g} credits; the account "
                f"has {available / credits.MICRO_PER_CREDIT:g} available",
            )
        task, created = launches.launch(
            conn,
            operation_id=operation_id,
            task_type=spec.name,
            params=params,
            queue=spec.queue,
            priority=request.priority,
        )
        if not created:  # a twin launched it a moment ago
            return self._relaunched(spec, task, params)
        self._send(spec, task)
        return _launched(task, created=True)

    def _relaunched(self, spec: OperationSpec, task: launches.Task, params: Any) -> models.Launched:
        """The operation's existing task; its message sent if it never left (Redis was down)."""
        if (task.task_type, task.params) != (spec.name, params):
            raise ConflictError(
                "operation_id",
                f"{task.operation_id!r} was launched as {task.task_type} with other parameters",
            )
        if task.sent_at is None:
            self._send(spec, task)
        return _launched(task, created=False)

    def _send(self, spec: OperationSpec, task: launches.Task) -> None:
        from beatless.queues.priorities import celery_priority
        from beatless.queues.producer import send_once

        kwargs = {"params": task.params, "operation_id": task.operation_id}
        try:
            send_once(
                self.redis(),
                self.transport,
                spec.celery_name,
                task.id,
                task.queue,
                kwargs=kwargs,
                priority=celery_priority(task.priority),
            )
        except REDIS_DOWN as error:
            log.warning("task %s: the broker did not take its message: %s", task.id, error)
            raise BrokerUnavailableError(
                f"the broker did not take task {task.id}; launch it again"
            ) from error
        launches.mark_sent(self.database(), task.id)
        if self.wake is not None:
            self.wake(self.redis(), self.transport.global_keyprefix)

    # -- status -----------------------------------------------------------------------------

    def status(self, task_id: str) -> models.TaskStatus:
        conn = self.database()
        task = _task(conn, task_id)
        state, record, meta = self._state(conn, task)
        mine = record is not None and record.task_id == task.id
        events = self._task_events(task)
        progress = (
            models.Progress(percent=events[-1].percent, stage=events[-1].stage, message=events[-1].message)
            if events
            else None
        )
        result = record.result if record is not None and record.status == "succeeded" else None
        if result is None and state == "SUCCESS" and isinstance(meta.get("result"), dict):
            result = meta["result"].get("result")
        return models.TaskStatus(
            task_id=task.id,
            operation_id=task.operation_id,
            task_type=task.task_type,
            queue=task.queue,
            priority=task.priority,
            state=state,
            progress=progress,
            result=result,
            error=_error(state, record if mine else None, meta),
            credits=_credits(record) if record is not None and mine else None,
            retry_of=task.retry_of,
            revoke_requested=task.revoked_at is not None,
            launched_at=task.created_at,
            started_at=_parse_time(events[0].at) if events else None,
            finished_at=_finished_at(state, record if mine else None, meta),
        )

    def _state(
        self, conn: Any, task: launches.Task
    ) -> tuple[models.State, records.OperationRecord | None, dict[str, Any]]:
        from beatless.workers.results import StoredStates

        record = records.get(conn, task.operation_id)
        meta = self._meta(task.id, StoredStates)
        if task.state is not None:  # how its delivery ended, as the worker wrote it
            return task.state, record, meta  # type: ignore[return-value]
        if record is not None and record.task_id == task.id:
            if record.status == "running" and task.revoked_at is not None and _lapsed(record):
                return "REVOKED", record, meta  # revoked, and its attempt died: it will not go on
            by_record: dict[str, models.State] = {
                "running": "PROGRESS",
                "succeeded": "SUCCESS",
                "failed": "FAILURE",
                "cancelled": "REVOKED",
            }
            return by_record[record.status], record, meta
        stored = str(meta.get("status", "PENDING"))
        if stored in models.FINISHED_STATES:
            return stored, record, meta  # type: ignore[return-value]
        if task.revoked_at is not None:
            return "REVOKED", record, meta  # the worker that takes it will not run it
        return ("PROGRESS" if stored in {"STARTED", "PROGRESS", "RETRY"} else "PENDING"), record, meta

    def _meta(self, task_id: str, stored_states: Any) -> dict[str, Any]:
        try:
            meta: dict[str, Any] = stored_states(self.redis()).get_task_meta(task_id)
        except REDIS_DOWN as error:
            log.warning("task %s: its stored state could not be read: %s", task_id, error)
            raise BrokerUnavailableError("the task state store did not answer") from error
        return meta

    def _task_events(self, task: launches.Task) -> list[ProgressEvent]:
        """This task's events, oldest first (the stream holds every attempt's)."""
        stream = ProgressStream(self.redis(), task.operation_id)
        try:
            events = stream.read(count=DEFAULT_MAX_EVENTS)
        except REDIS_DOWN as error:
            log.warning("task %s: its progress stream could not be read: %s", task.id, error)
            raise BrokerUnavailableError("the progress stream did not answer") from error
        return [e for e in events if e.task_id == task.id]

    # -- events -----------------------------------------------------------------------------

    def events(self, task_id: str, after: str | None = None, limit: int = 100) -> models.EventPage:
        if after is not None and not _STREAM_ID.match(after):
            raise InvalidInputError("after", f"must be an event id like 1700000000000-0, got {after!r}")
        if not 1 <= limit <= MAX_EVENTS_PER_PAGE:
            raise InvalidInputError("limit", f"must be between 1 and {MAX_EVENTS_PER_PAGE}, got {limit}")
        conn = self.database()
        task = _task(conn, task_id)
        state, record, _meta = self._state(conn, task)  # before the read: see `_settled`
        settled = state in models.FINISHED_STATES and self._settled(task, record)
        stream = ProgressStream(self.redis(), task.operation_id)
        try:
            found = stream.read(after=after or "0-0", count=limit)
        except REDIS_DOWN as error:
            log.warning("task %s: its progress stream could not be read: %s", task.id, error)
            raise BrokerUnavailableError("the progress stream did not answer") from error
        # The stream is the operation's: other tasks of it (a retry, a replay) are not shown, but
        # the position moves past them.
        return models.EventPage(
            task_id=task.id,
            state=state,
            events=[models.Event(**e.as_dict()) for e in found if e.task_id == task.id],
            next_after=found[-1].id if found else (after or "0-0"),
            finished=settled and len(found) < limit,
        )

    def _settled(self, task: launches.Task, record: records.OperationRecord | None) -> bool:
        """Whether a finished task's last event is in its stream: an attempt records its end
        first and publishes it just after (best effort: given up after `SETTLE_SECONDS`)."""
        if record is None or record.task_id != task.id or record.finished_at is None:
            return True  # the task ran no attempt of its own: it publishes nothing more
        if any(e.state in ENDED_EVENT_STATES for e in self._task_events(task)):
            return True
        return (datetime.now(UTC) - record.finished_at).total_seconds() > SETTLE_SECONDS

    # -- revoke and retry -------------------------------------------------------------------

    def revoke(self, task_id: str) -> models.Revoked:
        conn = self.database()
        task = _task(conn, task_id)
        state = self._state(conn, task)[0]
        if state in {"SUCCESS", "FAILURE"}:
            raise ConflictError("task_id", f"task {task_id} has ended ({state}); there is nothing to revoke")
        revoked = launches.revoke(conn, task.id)
        assert revoked is not None
        return models.Revoked(task_id=task.id, state=self._state(conn, revoked)[0], revoke_requested=True)

    def retry(self, task_id: str) -> models.Launched:
        from beatless import credits

        conn = self.database()
        task = _task(conn, task_id)
        spec = _spec(task.task_type)
        again = launches.find_retry(conn, task.id)
        if again is not None:  # retried before: that retry, whatever has happened since
            if again.sent_at is None:
                self._send(spec, again)
            return _launched(again, created=False)
        state = self._state(conn, task)[0]
        if state not in {"FAILURE", "REVOKED"}:
            raise ConflictError(
                "task_id", f"task {task_id} is {state}; only a FAILURE or REVOKED task is retried"
            )
        account = spec.paying_account(conn, task.params)
        estimate = spec.cost.estimate_micro(spec.units(self.resources, task.params))
        if credits.get_account(conn, account).available_micro < estimate:
            raise PaymentRequiredError(
                "params.graph_id", "the account has too few credits available for a retry"
            )
        again, created = launches.retry(conn, task)
        if again.sent_at is None:
            self._send(spec, again)
        return _launched(again, created=created)

    # -- stats ------------------------------------------------------------------------------

    def stats(self) -> models.Stats:
        from beatless.queues.depth import BrokerUnreadableError
        from beatless.workers import presence

        try:
            reading = self.depth()
            workers = presence.read(self.redis(), now=self.clock())
        except (*REDIS_DOWN, BrokerUnreadableError) as error:
            log.warning("stats: the broker did not answer: %s", error)
            raise BrokerUnavailableError("the broker did not answer") from error
        now = self.clock()
        rows = (
            self.database()
            .execute(
                "SELECT id, task, error, finished_at FROM operations WHERE status = 'failed' "
                "ORDER BY finished_at DESC NULLS LAST LIMIT %s",
                (RECENT_FAILURES,),
            )
            .fetchall()
        )
        return models.Stats(
            queues={
                name: models.QueueStats(pending=q.pending, reserved=q.reserved)
                for name, q in reading.queues.items()
            },
            workers=[
                models.WorkerStats(
                    name=w.name,
                    state="busy" if w.state == "busy" else "idle",
                    protected=w.protected,
                    tasks=w.tasks,
                    queues=list(w.queues),
                    seen_seconds_ago=round(w.age(now), 1),
                )
                for w in workers
            ],
            recent_failures=[
                models.Failure(operation_id=r[0], task_type=r[1], error=r[2], finished_at=r[3]) for r in rows
            ],
        )


def catalogue() -> models.Catalogue:
    """Every launchable task (static: it needs no connection)."""
    return models.Catalogue(tasks=[models.CatalogueEntry(**spec.describe()) for spec in OPERATIONS])


def _spec(task_type: str) -> OperationSpec:
    return operation(task_type)  # InvalidInputError naming task_type, with the known ones


def _task(conn: Any, task_id: str) -> launches.Task:
    task = launches.get(conn, task_id) if len(task_id) <= 200 else None
    if task is None:
        raise NotFoundError("task_id", f"no task {task_id!r}")
    return task


def _lapsed(record: records.OperationRecord) -> bool:
    """Its attempt's lease ran out: the process that held it is gone."""
    return record.lease_expires_at is not None and record.lease_expires_at < datetime.now(UTC)


def _launched(task: launches.Task, *, created: bool) -> models.Launched:
    return models.Launched(
        task_id=task.id, operation_id=task.operation_id, status_url=f"/tasks/{task.id}", created=created
    )


def _credits(record: records.OperationRecord) -> models.Credits:
    from beatless.credits.money import MICRO_PER_CREDIT

    charged = None if record.charged_micro is None else record.charged_micro / MICRO_PER_CREDIT
    return models.Credits(estimated=record.estimated_micro / MICRO_PER_CREDIT, charged=charged)


def _error(state: str, record: records.OperationRecord | None, meta: dict[str, Any]) -> str | None:
    if state not in {"FAILURE", "REVOKED"}:
        return None
    if record is not None and record.error:
        return record.error
    result = meta.get("result")
    if isinstance(result, dict) and "exc_type" in result:
        return f"{result['exc_type']}: {result.get('exc_message')}"
    return None if result is None else json.dumps(result, default=str)[:2000]


def _finished_at(state: str, record: records.OperationRecord | None, meta: dict[str, Any]) -> datetime | None:
    if state not in models.FINISHED_STATES:
        return None
    if record is not None and record.finished_at is not None:
        return record.finished_at
    done = meta.get("date_done")
    return _parse_time(done) if isinstance(done, str) else None


def _parse_time(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
