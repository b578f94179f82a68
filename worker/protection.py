"""Celery glue of ECS task scale-in protection (the logic is `beatless.workers.protection`).

`TaskProtectionStep` is a worker bootstep: it starts with the worker's main
process (before the consumer) and stops with it. Its thread asks every
``WORKER_BUSY_POLL_SECONDS`` whether the worker holds any task (received
and not finished: ``celery.worker.state.reserved_requests`` or
``active_requests``, which the main process keeps for every pool type) and
hands the answer to `ProtectionController`; agent calls therefore never
block the consumer. It releases the protection when the step stops, which
Celery does as soon as a shutdown begins (before it waits for running
tasks): a task that received SIGTERM is being stopped already, whatever
its protection.

Without ``ECS_AGENT_URI`` (not on ECS) protection is off, which is logged
once at start, and no thread runs.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

from celery import bootsteps
from celery.worker import state as worker_state

from beatless.workers.protection import (
    AgentClient,
    EmfWriter,
    ProtectionController,
    ProtectionPolicy,
    task_id_from_metadata,
)
from beatless.workers.settings import WorkerSettings

log = logging.getLogger("beatless.protection")


def held_task_count() -> int:
    """How many tasks this worker has received and not finished."""
    return len(set(worker_state.reserved_requests) | set(worker_state.active_requests))


def worker_holds_tasks() -> bool:
    """Whether this worker has received a task it has not finished."""
    return bool(worker_state.reserved_requests) or bool(worker_state.active_requests)


class ProtectionService:
    def __init__(self, settings: WorkerSettings, busy: Callable[[], bool] = worker_holds_tasks) -> None:
        self.settings = settings
        self._busy = busy
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.controller: ProtectionController | None = None
        p = settings.protection
        self.client = (
            AgentClient(
                p.agent_uri, connect_timeout=p.connect_timeout_seconds, read_timeout=p.read_timeout_seconds
            )
            if p.agent_uri
            else None
        )

    def start(self) -> None:
        if self.client is None:
            log.info("ECS task scale-in protection is off: ECS_AGENT_URI is not set (not running on ECS)")
            return
        self._thread = threading.Thread(target=self._run, name="beatless-task-protection", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self.client is not None
        p = self.settings.protection
        task_id = task_id_from_metadata(p.metadata_uri, socket.gethostname())
        # sys.__stdout__: Celery redirects sys.stdout into its logger, and an
        # EMF line must reach the log stream as bare JSON.
        stream = sys.__stdout__
        assert stream is not None
        self.controller = ProtectionController(
            self.client,
            ProtectionPolicy(
                expires_minutes=p.expires_minutes,
                renew_seconds=p.renew_seconds,
                release_delay_seconds=p.release_delay_seconds,
                retry_seconds=p.retry_seconds,
                metrics_interval_seconds=self.settings.metrics_interval_seconds,
            ),
            EmfWriter(self.settings.metrics_namespace, stream),
            task_id,
        )
        log.info(
            "ECS task scale-in protection is on for task %s: %d min, renewed every %g s while busy",
            task_id,
            p.expires_minutes,
            p.renew_seconds,
        )
        poll = self.settings.busy_poll_seconds
        while True:
            try:
                self.controller.observe(self._busy())
            except Exception:
                # A bug here must not take the worker down; it is logged with its traceback.
                log.exception("task protection check failed; the worker carries on")
            if self._stop.wait(poll):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self.client is not None:
            self._thread.join(self.client.worst_case_seconds + 1)
        if self.controller is not None:
            self.controller.shutdown()


class TaskProtectionStep(bootsteps.StartStopStep):
    label = "Beatless task protection"
    # After the pool: its processes are forked before this step's thread exists (a fork while a
    # thread holds a lock or an import leaves the child stuck).
    requires = ("celery.worker.components:Pool",)

    def create(self, parent: Any) -> ProtectionService:
        service = ProtectionService(parent.app.settings)
        parent.beatless_protection = service  # the presence step reports its state
        return service
