"""Celery glue of worker presence (the format is `beatless.workers.presence`).

`PresenceStep` is a worker bootstep: while the worker's main process runs, a thread
writes the worker's line into Redis every ``WORKER_PRESENCE_SECONDS`` (default 5) —
idle or busy (tasks received and not finished), whether its scale-in protection is
on (None when protection is off), the queues it consumes — and deletes it when the
worker stops. The task API's `/stats` and the local view read every worker in one
round trip; nothing is broadcast to the workers. A Redis error is logged and the next
beat tries again: presence never takes the worker down.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps

from beatless.queues.connection import connect
from beatless.workers import presence
from worker.protection import held_task_count

log = logging.getLogger("beatless.presence")


class PresenceService:
    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.settings = worker.app.settings
        self.name = str(worker.hostname)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Any = None

    def _connect(self) -> Any:
        return connect(self.settings.broker_url, self.settings.broker_password, timeout=2.0)

    def _protected(self) -> bool | None:
        protection = getattr(self.worker, "beatless_protection", None)
        controller = getattr(protection, "controller", None)
        return None if controller is None else bool(controller.protected)

    def beat(self) -> None:
        if self._client is None:
            self._client = self._connect()
        presence.publish(
            self._client,
            self.name,
            tasks=held_task_count(),
            protected=self._protected(),
            queues=self.settings.queues,
            every=self.settings.presence_seconds,
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="beatless-presence", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.beat()
            except Exception as error:
                log.warning("worker presence not written: %s", error)
                self._client = None  # reconnect on the next beat
            if self._stop.wait(self.settings.presence_seconds):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            presence.withdraw(self._client or self._connect(), self.name)
        except Exception as error:
            log.warning("worker presence not withdrawn (it goes stale): %s", error)


class PresenceStep(bootsteps.StartStopStep):
    label = "Beatless worker presence"
    # After the pool: its processes are forked before this step's thread exists. A fork while
    # a thread is inside an import or holds a lock leaves the child stuck on it for good (a
    # task received and never run, seen in tests/system/test_local_scale_in.py).
    requires = ("celery.worker.components:Pool",)

    def create(self, parent: Any) -> PresenceService:
        return PresenceService(parent)
