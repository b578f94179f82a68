"""Waiting for a task's result from its stored state, never from pub/sub alone.

Celery's Redis result consumer, when it reconnects (after a Redis restart or a
failover), reads the pending tasks' states (MGET) BEFORE it subscribes again;
a result stored and published between the two is never delivered, and
`AsyncResult.get()` waits out its whole timeout although the task finished
(celery#4857). Every Beatless producer that waits for a task — the local
runner, the CLI, the task API, the tests — reads the stored state instead
(`backend.get_task_meta`, a GET of the result key), every `poll_seconds`: a
missed message costs at most one poll interval, and a broker that is briefly
unreachable is retried until the deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from beatless.errors import BeatlessError

SUCCESS = "SUCCESS"
FAILED_STATES = frozenset({"FAILURE", "REVOKED"})
DEFAULT_POLL_SECONDS = 0.2


class ResultStore(Protocol):
    """What a Celery result backend offers (`app.backend`)."""

    def get_task_meta(self, task_id: str, cache: bool = True) -> dict[str, Any]: ...


class TaskFailedError(BeatlessError):
    """The task ended in FAILURE or REVOKED; `result` is what the backend stored."""

    def __init__(self, task_id: str, state: str, result: Any) -> None:
        super().__init__(f"task {task_id} ended in {state}: {result!r}")
        self.task_id = task_id
        self.state = state
        self.result = result


class ResultTimeoutError(BeatlessError, TimeoutError):
    """The task had not finished when the wait ran out; `state` is the last one read."""

    def __init__(self, task_id: str, timeout: float, state: str | None, error: BaseException | None) -> None:
        reason = f"last state {state}" if state else f"its state could not be read ({error})"
        super().__init__(f"task {task_id} did not finish within {timeout:g} s ({reason})")
        self.task_id = task_id
        self.state = state


def wait_for_result(
    backend: ResultStore,
    task_id: str,
    *,
    timeout: float,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """The result of `task_id` once its stored state is SUCCESS.

    Raises `TaskFailedError` for FAILURE/REVOKED and `ResultTimeoutError` after
    `timeout` seconds. Errors reaching the backend (its `connection_errors`, or an
    OSError) are retried until the deadline.
    """
    retryable: tuple[type[BaseException], ...] = (OSError, *getattr(backend, "connection_errors", ()))
    deadline = clock() + timeout
    state: str | None = None
    error: BaseException | None = None
    while True:
        try:
            meta = backend.get_task_meta(task_id, cache=False)
        except retryable as exc:
            error = exc
        else:
            state = str(meta.get("status"))
            if state == SUCCESS:
                return meta.get("result")
            if state in FAILED_STATES:
                raise TaskFailedError(task_id, state, meta.get("result"))
        left = deadline - clock()
        if left <= 0:
            raise ResultTimeoutError(task_id, timeout, state, error)
        sleep(min(poll_seconds, left))


# Where Celery's Redis result backend keeps a task's state (no key prefix is configured).
RESULT_KEY_PREFIX = "celery-task-meta-"


class StoredStates:
    """A task's stored state read straight from the result backend's Redis, without
    Celery (the task API's cold start counts): the JSON Celery writes under
    `celery-task-meta-<task id>` — `status`, `result`, `traceback`, `date_done`."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def get_task_meta(self, task_id: str, cache: bool = True) -> dict[str, Any]:
        import json

        raw = self.client.get(RESULT_KEY_PREFIX + task_id)
        if raw is None:
            return {"status": "PENDING", "result": None, "task_id": task_id}
        meta: dict[str, Any] = json.loads(raw)
        return meta
