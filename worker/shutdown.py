"""Soft shutdown within the container's stop timeout.

ECS sends SIGTERM, then SIGKILL ``stopTimeout`` seconds later (at most 120 s
on Fargate). Beatless handles SIGTERM in two phases:

1. Celery's warm shutdown (its own SIGTERM handler, which only sets a flag):
   the worker stops taking messages and keeps running its event loop, so a
   task that finishes now is acknowledged as usual and the worker exits as
   soon as it is idle.
2. If a task is still running ``WORKER_SOFT_SHUTDOWN_SECONDS`` after
   SIGTERM, `SoftShutdownWatchdog` sends SIGQUIT to the worker's own main
   process: Celery's cold shutdown cancels the running tasks and puts their
   (``acks_late``) messages back into Redis at once, long before the
   ``visibility_timeout``; another worker runs them from the start.

Why not Celery's built-in soft shutdown (``worker_soft_shutdown_timeout``
with ``REMAP_SIGTERM=SIGQUIT``)? Celery 5.7 waits out that timeout inside
the signal handler, with the event loop frozen: a task that finishes during
the wait is not acknowledged until the timeout ends (the worker always waits
the full time, and in our runs the acknowledgement of such a task was
sometimes lost, leaving its message for the visibility timeout), and a
SIGTERM that lands while the main process reads a task result from a pool
process hangs the shutdown until SIGKILL (celery/celery#8417). The warm
phase above has neither problem; the worker therefore refuses to start with
``REMAP_SIGTERM`` set, and ``worker_soft_shutdown_timeout`` stays 0.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import bootsteps
from celery.worker import state as worker_state

from worker.protection import worker_holds_tasks

log = logging.getLogger("beatless.shutdown")


def _flag_set(value: object) -> bool:
    # Celery sets the flags to an exit code, which may be 0.
    return value is not None and value is not False


class SoftShutdownWatchdog:
    """Turns a warm shutdown that outlasts `soft_seconds` into a cold one."""

    def __init__(
        self,
        soft_seconds: float,
        busy: Callable[[], bool] = worker_holds_tasks,
        poll_seconds: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.soft_seconds = soft_seconds
        self._busy = busy
        self._poll = poll_seconds
        self._clock = clock
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="beatless-soft-shutdown", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        # The worker stops its steps before the pool waits for running
        # tasks; the watchdog must keep watching that wait, so it is not
        # stopped here. It is a daemon thread and ends with the process.
        pass

    def _run(self) -> None:
        while not _flag_set(worker_state.should_stop):
            if _flag_set(worker_state.should_terminate):
                return
            time.sleep(self._poll)
        began = self._clock()
        log.info("warm shutdown: running tasks have %g s to finish", self.soft_seconds)
        while self._clock() - began < self.soft_seconds:
            if _flag_set(worker_state.should_terminate):
                return
            time.sleep(self._poll)
        if not self._busy() or _flag_set(worker_state.should_terminate):
            return
        log.warning(
            "tasks still running %g s after SIGTERM: cancelling them, their messages go back to the queue",
            self.soft_seconds,
        )
        os.kill(os.getpid(), signal.SIGQUIT)


class SoftShutdownStep(bootsteps.StartStopStep):
    label = "Beatless soft shutdown"

    def create(self, parent: Any) -> SoftShutdownWatchdog:
        return SoftShutdownWatchdog(parent.app.settings.soft_shutdown_seconds)
