"""The one place that builds boto3 clients.

Core code takes clients as arguments; entry points call `client(...)` here.
`AWS_ENDPOINT_URL` (read by botocore itself) points every client at a moto
server locally and in tests. Clients are cached per process so a warm Lambda
reuses its connections.
"""

from __future__ import annotations

import functools
from typing import Any

import boto3
from botocore.config import Config

# Short timeouts and few retries: a scheduled job that hangs on an AWS call
# for minutes is worse than one that fails and is retried on the next tick.
DEFAULT_CONFIG = Config(
    connect_timeout=2,
    read_timeout=10,
    retries={"max_attempts": 3, "mode": "standard"},
)


@functools.cache
def session() -> boto3.Session:
    return boto3.Session()


@functools.cache
def client(service: str) -> Any:
    """A cached boto3 client for `service` with Beatless' timeouts."""
    return session().client(service, config=DEFAULT_CONFIG)  # type: ignore[call-overload]


def reset_clients() -> None:
    """Forget cached clients (tests that change AWS_ENDPOINT_URL call this)."""
    client.cache_clear()
    session.cache_clear()
