"""The heavy operations as Celery tasks: one task per catalogue entry
(`beatless.operations.catalogue`), each a thin wrapper over `run_operation`.

Trigger: a message on the entry's queue (`graph` or `ingest`), sent as
``send_task("beatless.<task_type>", kwargs={"params": {...}, "operation_id": ...})``
(`operation_id` optional: derived from the task and its parameters).
Side effects: the operation's (see its core); its row in `operations`, its
credit hold, its progress stream in Redis and the Celery task state (PROGRESS
with percent, stage and message). Idempotency: per operation id — a delivery
of an operation that succeeded returns its result and charges nothing.
A cancelled operation ends as REVOKED.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from celery import Celery, Task
from celery.exceptions import Ignore

from beatless.operations.catalogue import OPERATIONS, OperationSpec
from beatless.operations.resources import OperationResources
from beatless.operations.runtime import OperationCancelledError, run_operation
from beatless.queues.connection import connect

_resources: dict[int, OperationResources] = {}
_lock = threading.Lock()


def resources(app: Any) -> OperationResources:
    """One per app and process (pool processes fork after import: nothing opened before)."""
    with _lock:
        found = _resources.get(id(app))
        if found is None:
            settings = app.settings  # worker.app.BeatlessCelery

            def progress_client() -> Any:
                return connect(settings.broker_url, settings.broker_password, timeout=2.0)

            found = _resources[id(app)] = OperationResources(os.environ, progress_client=progress_client)
        return found


def _task_for(spec: OperationSpec) -> Any:
    def run(task: Task, params: Mapping[str, Any], operation_id: str | None = None) -> dict[str, Any]:
        def report(meta: Mapping[str, Any]) -> None:
            task.update_state(state="PROGRESS", meta=dict(meta))

        try:
            outcome = run_operation(
                spec,
                params,
                resources=resources(task.app),
                operation_id=operation_id,
                task_id=task.request.id or "",
                report=report,
            )
        except OperationCancelledError as cancelled:
            task.backend.mark_as_revoked(task.request.id, str(cancelled), request=task.request)
            raise Ignore() from None
        return outcome.summary()

    run.__name__ = spec.name
    run.__doc__ = spec.description
    return run


def register(app: Celery) -> None:
    for spec in OPERATIONS:
        app.task(
            name=spec.celery_name,
            bind=True,
            shared=False,  # one closure per app: not a shared task every app would re-register
            time_limit=spec.time_limit,
            soft_time_limit=spec.soft_time_limit,
        )(_task_for(spec))


# Where each operation's messages go (the router's default for them).
QUEUE_OF = {spec.celery_name: spec.queue for spec in OPERATIONS}
