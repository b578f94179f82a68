"""The Beatless Celery app: ``celery -A worker.app worker``.

Trigger: task messages on the Redis queues ``graph``, ``ingest`` and
``default`` (this worker consumes ``WORKER_QUEUES``). Configuration comes
from the environment once (`beatless.workers.settings` documents the
contract); the module attribute ``app`` is built on first access, so
importing this module (for `create_app` in tests or the local runner) reads
no environment. Side effects and idempotency are the tasks' (`worker.tasks`:
each applies its effect at most once per task id, so a redelivered message
changes nothing).

Safety, in short (the reasons are in ``DESIGN.md`` §4):

- ``acks_late`` + ``reject_on_worker_lost`` + prefetch 1: a message leaves
  Redis only when its task finished; a lost pool process puts it back.
- Shutdown within the stop timeout (`worker.shutdown`): SIGTERM starts
  Celery's warm shutdown; tasks still running ``WORKER_SOFT_SHUTDOWN_SECONDS``
  later are cancelled and their messages put back at once (not after
  ``visibility_timeout``). Celery's own soft shutdown is not used (see
  `worker.shutdown` for why), so ``REMAP_SIGTERM`` must not be set.
- Start-up check (`StartupCheck`, a worker bootstep, so it runs however the
  worker is started): every task has a time limit shorter than the
  ``visibility_timeout``; the soft shutdown ends before the stop timeout; the
  protection expiry is in range; ``REMAP_SIGTERM`` is unset. Otherwise the
  worker exits non-zero and says why.
- Priorities: ``queue_order_strategy=priority``; a task sent without a
  priority gets the product's normal level (`beatless.queues.priorities`), not
  kombu's default 0, the most urgent list.
- ECS task scale-in protection while the worker holds a task
  (`worker.protection`).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
from typing import Any
from urllib.parse import urlsplit

from billiard import common as billiard_common
from celery import Celery, bootsteps
from kombu import Queue

from beatless.errors import ConfigurationError
from beatless.queues.priorities import DEFAULT_CELERY_PRIORITY
from beatless.workers.settings import DEFAULT_QUEUE, WorkerSettings
from worker import consumer_state, operations, tasks  # consumer_state registers `beatless_consumer`
from worker.presence import PresenceStep
from worker.protection import TaskProtectionStep
from worker.shutdown import SoftShutdownStep

log = logging.getLogger("beatless.worker")

# Limits of tasks that set none themselves (Celery's built-in tasks, too).
DEFAULT_TASK_TIME_LIMIT = 600
DEFAULT_TASK_SOFT_TIME_LIMIT = 540


class BeatlessCelery(Celery):
    """A Celery app that carries the settings it was built from."""

    def __init__(self, settings: WorkerSettings, **kwargs: Any) -> None:
        super().__init__("beatless", **kwargs)
        self.settings = settings


def route_with_default_priority(
    name: str, args: Any, kwargs: Any, options: dict[str, Any], task: Any = None, **kw: Any
) -> dict[str, Any]:
    """Every message gets a queue (an operation's own: `graph` or `ingest`) and a priority;
    the producer's own choice wins."""
    return {"queue": operations.QUEUE_OF.get(name, DEFAULT_QUEUE), "priority": DEFAULT_CELERY_PRIORITY}


def celery_config(settings: WorkerSettings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "broker_password": settings.broker_password,
        "broker_transport_options": settings.kombu_transport_options(),
        "broker_connection_retry_on_startup": True,
        "result_backend": settings.result_backend_url,
        "redis_password": settings.result_backend_password,
        "result_expires": 24 * 3600,
        # The routing key is the queue name: the monitor attributes the
        # entries of the unacked hash to queues by it.
        "task_queues": [Queue(name, routing_key=name) for name in settings.declared_queues],
        "task_default_queue": DEFAULT_QUEUE,
        "task_default_priority": DEFAULT_CELERY_PRIORITY,
        "task_routes": (route_with_default_priority,),
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_track_started": True,
        "task_time_limit": DEFAULT_TASK_TIME_LIMIT,
        "task_soft_time_limit": DEFAULT_TASK_SOFT_TIME_LIMIT,
        "worker_prefetch_multiplier": 1,  # 0 would mean unlimited
        "worker_concurrency": settings.concurrency,
        # Celery's soft shutdown waits inside its signal handler with the
        # event loop frozen; worker.shutdown implements the soft phase instead.
        "worker_soft_shutdown_timeout": 0.0,
        "worker_enable_soft_shutdown_on_idle": False,
        # A running task goes on through a broker reconnect (a failover): its
        # effect is idempotent (operations per operation id, under a lease that
        # keeps a second copy waiting; record_effect per task id), so a message
        # redelivered because its ack was lost finds the result instead of
        # running again — while cancelling would throw the work away, and lose
        # the message outright when the new Redis is empty.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }
    if urlsplit(settings.broker_url).scheme == "rediss":
        conf["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if urlsplit(settings.result_backend_url).scheme == "rediss":
        conf["redis_backend_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    return conf


def task_time_limits(app: Celery) -> dict[str, float | None]:
    """Hard time limit of every registered task (None: none)."""
    return {name: task.time_limit for name, task in sorted(app.tasks.items())}


def check_worker(app: BeatlessCelery) -> None:
    """Raise ConfigurationError if this worker must not start."""
    settings = app.settings
    settings.check_shutdown()
    settings.check_protection()
    settings.check_task_limits(task_time_limits(app))
    if billiard_common.REMAP_SIGTERM:
        raise ConfigurationError(
            f"REMAP_SIGTERM={billiard_common.REMAP_SIGTERM} must not be set: SIGTERM must start the warm "
            "shutdown, after which Beatless cancels tasks still running after "
            f"WORKER_SOFT_SHUTDOWN_SECONDS ({settings.soft_shutdown_seconds:g} s); Celery's remapped "
            "soft shutdown freezes the worker while it waits (see worker/shutdown.py)"
        )


class StartupCheck(bootsteps.Step):
    """Refuses to start an unsafe worker; consumes WORKER_QUEUES unless -Q names fewer queues."""

    label = "Beatless start-up check"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        app: BeatlessCelery = parent.app
        try:
            check_worker(app)
        except ConfigurationError as exc:
            raise SystemExit(f"Beatless worker refuses to start: {exc}") from None
        queues = app.amqp.queues
        # Without -Q Celery consumes every declared queue; a -Q naming fewer wins.
        if set(queues.consume_from) == set(queues):
            queues.select(list(app.settings.queues))
        log.info("Beatless worker settings: %s", json.dumps(app.settings.summary()))
        super().__init__(parent, **kwargs)


__all__ = ["BeatlessCelery", "consumer_state", "create_app"]


def create_app(settings: WorkerSettings) -> BeatlessCelery:
    app = BeatlessCelery(settings, set_as_current=False)
    app.conf.update(celery_config(settings))
    tasks.register(app)
    operations.register(app)
    app.steps["worker"].add(StartupCheck)
    app.steps["worker"].add(TaskProtectionStep)
    app.steps["worker"].add(PresenceStep)
    app.steps["worker"].add(SoftShutdownStep)
    return app


_app: BeatlessCelery | None = None


def __getattr__(name: str) -> Any:
    # ``celery -A worker.app`` looks up ``worker.app.app``.
    global _app
    if name == "app":
        if _app is None:
            _app = create_app(WorkerSettings.from_env(os.environ))
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
