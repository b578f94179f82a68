"""What the operations open, built lazily from one environment (read once, at the edge).

Environment (the worker's; `infra` sets it on the task definition):

- the database: `beatless.db.settings` (`DATABASE_URL` | `DATABASE_SECRET_ARN`, ...);
- progress streams: the broker's Redis (`BROKER_URL`, `BROKER_PASSWORD_SECRET_ARN`);
- the graph registries: `INSTANCE_REGISTRY_TABLE`, `GRAPH_REGISTRY_TABLE`;
- the graph nodes' API key: `GRAPH_API_KEY_SECRET_ARN` (locally `GRAPH_API_KEY`);
- `BACKUP_BUCKET`: where graph backups go (the graph stack's backups bucket);
- `STAGING_BUCKET`: intermediate files (a subgraph's exported tables, validated batches);
- `UPLOADS_BUCKET`: what users uploaded (ingestion reads it);
- `WORK_DIR`: local scratch space for ingestion (default: the system's temporary directory);
- `OPERATION_LEASE_SECONDS` (default 60, at least 4): how long after its last renewal
  an attempt is presumed dead and its operation taken over by a new delivery;
- `GRAPH_NODE_TIMEOUT_SECONDS` (default 600): a node request's read timeout (loads and
  backups answer when done).

One `OperationResources` per process (Celery's pool processes fork after import,
so nothing is opened before the first task asks for it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from beatless.settings import Env, env_int, env_required, env_str

DEFAULT_NODE_TIMEOUT_SECONDS = 600
PROGRESS_TIMEOUT_SECONDS = 2.0  # progress is best effort: a slow Redis must not slow the work


class OperationResources:
    def __init__(self, env: Env, *, progress_client: Callable[[], Any] | None = None) -> None:
        self.env: Mapping[str, str] = dict(env)
        self._progress_factory = progress_client
        self.lease_seconds = env_int(env, "OPERATION_LEASE_SECONDS", 60, minimum=4, maximum=3600)
        self.node_timeout = env_int(
            env, "GRAPH_NODE_TIMEOUT_SECONDS", DEFAULT_NODE_TIMEOUT_SECONDS, minimum=1, maximum=3600
        )
        self._lock = threading.Lock()
        self._database: Any = None
        self._conn: Any = None
        self._redis: Any = None
        self._api_key: str | None = None

    # -- PostgreSQL -------------------------------------------------------------------------

    def _db(self) -> Any:
        from beatless.db.connect import database_from_env

        with self._lock:
            if self._database is None:
                self._database = database_from_env(self.env)
            return self._database

    def database(self) -> Any:
        """The process's connection (autocommit), reopened when it was lost."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self._db().connect("beatless-worker")
        return self._conn

    def lease_database(self) -> Any:
        """A connection of its own, for a thread beside the task (leases)."""
        return self._db().connect("beatless-worker-lease")

    # -- Redis --------------------------------------------------------------------------------

    def progress_client(self) -> Any:
        """The Redis of the progress streams: the broker's (the worker passes its own client
        factory; otherwise `BROKER_URL` + `BROKER_PASSWORD_SECRET_ARN`)."""
        from beatless.queues.connection import SecretPassword, connect, validate_broker_url

        with self._lock:
            if self._redis is None:
                if self._progress_factory is not None:
                    self._redis = self._progress_factory()
                else:
                    url = validate_broker_url(env_required(self.env, "BROKER_URL"))
                    arn = env_str(self.env, "BROKER_PASSWORD_SECRET_ARN")
                    password = SecretPassword(self.secretsmanager(), arn).get() if arn else None
                    self._redis = connect(url, password, timeout=PROGRESS_TIMEOUT_SECONDS)
            return self._redis

    # -- AWS and the graph plane -------------------------------------------------------------

    def registries(self) -> Any:
        from beatless.aws import dynamodb
        from beatless.graphs.registry import Registries

        return Registries(
            dynamodb(),
            env_required(self.env, "INSTANCE_REGISTRY_TABLE"),
            env_required(self.env, "GRAPH_REGISTRY_TABLE"),
        )

    def node(self, endpoint: str) -> Any:
        from beatless.graphs.client import NodeClient, api_key_from_env

        with self._lock:
            if self._api_key is None:
                self._api_key = api_key_from_env(self.env, self.secretsmanager)
            key = self._api_key
        return NodeClient(endpoint, key, timeout=self.node_timeout)

    def backup_bucket(self) -> str:
        return env_required(self.env, "BACKUP_BUCKET")

    def staging_bucket(self) -> str:
        return env_required(self.env, "STAGING_BUCKET")

    def uploads_bucket(self) -> str:
        return env_required(self.env, "UPLOADS_BUCKET")

    def work_dir(self) -> str | None:
        return env_str(self.env, "WORK_DIR")

    def autoscaling(self) -> Any:
        from beatless.aws import client

        return client("autoscaling")

    def s3(self) -> Any:
        from beatless.aws import client

        return client("s3", read_timeout=float(self.node_timeout))

    def secretsmanager(self) -> Any:
        from beatless.aws import client

        return client("secretsmanager")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None
