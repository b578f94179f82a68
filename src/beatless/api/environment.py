"""The task API's resources, read once from the environment (at the edge) and built lazily.

- the broker's Redis — queues, progress streams, stored task states, worker presence:
  `BROKER_URL`, `BROKER_PASSWORD_SECRET_ARN`, `BROKER_TRANSPORT_OPTIONS`, and `QUEUES`
  (what `/stats` reads; default `graph,ingest,default`). The workers' result backend
  must be this Redis (their default);
- PostgreSQL — tasks, operations, credits: `beatless.db.settings` (`DATABASE_URL` |
  `DATABASE_SECRET_ARN`, ...);
- what cost estimates read: `INSTANCE_REGISTRY_TABLE`, `GRAPH_REGISTRY_TABLE` (a graph's
  size), `UPLOADS_BUCKET` and `STAGING_BUCKET` (an upload's size, a staged batch's rows);
- the worker monitor to wake when a task is sent while it idles: `MONITOR_FUNCTION_NAME`
  (optional; `beatless.queues.wake`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from beatless.api.service import TaskApi

DEFAULT_QUEUES = "graph,ingest,default"

_built: dict[str, TaskApi] = {}
_lock = threading.Lock()


def task_api(env: Mapping[str, str]) -> TaskApi:
    """The `TaskApi` of this environment (nothing connects before a request needs it)."""
    from beatless.aws import client
    from beatless.db.settings import DatabaseSettings
    from beatless.operations.resources import OperationResources
    from beatless.queues.connection import BrokerSettings, broker_for
    from beatless.queues.wake import waker_from_env
    from beatless.settings import env_required

    # Every setting read now: a bad one is the deployment's fault, found before any request
    # (`TaskHttpApp` answers it with a 500 and the Errors alarm), never blamed on a caller.
    DatabaseSettings.from_env(env)
    for name in ("INSTANCE_REGISTRY_TABLE", "GRAPH_REGISTRY_TABLE", "UPLOADS_BUCKET", "STAGING_BUCKET"):
        env_required(env, name)
    settings = BrokerSettings.from_env({**env, "QUEUES": env.get("QUEUES") or DEFAULT_QUEUES})
    secretsmanager = _OnFirstUse(lambda: client("secretsmanager")) if settings.password_secret_arn else None
    broker = broker_for(settings, secretsmanager)
    resources = OperationResources(env, progress_client=broker.client)
    return TaskApi(
        database=resources.database,
        redis=broker.client,
        depth=broker.read,
        resources=resources,
        transport=settings.transport,
        wake=waker_from_env(env),
    )


class _OnFirstUse:
    """A client made on its first use: the broker's secret is fetched by the first request
    that needs Redis, not while the Lambda imports."""

    def __init__(self, make: Any) -> None:
        self._make = make
        self._made: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._made is None:
            self._made = self._make()
        return getattr(self._made, name)


def from_environ() -> TaskApi:
    """The process's `TaskApi`, from `os.environ` (the Lambda's, the local server's)."""
    import os

    with _lock:
        if "api" not in _built:
            _built["api"] = task_api(os.environ)
        return _built["api"]


def reset() -> Any:
    """Forget the built `TaskApi` (tests change the environment)."""
    with _lock:
        _built.clear()
