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
DEFAULT_READ_TIMEOUT_SECONDS = 10.0
DEFAULT_ATTEMPTS = 3


@functools.cache
def session() -> boto3.Session:
    return boto3.Session()


@functools.cache
def client(
    service: str,
    *,
    read_timeout: float = DEFAULT_READ_TIMEOUT_SECONDS,
    attempts: int = DEFAULT_ATTEMPTS,
) -> Any:
    """A cached boto3 client for `service` with Beatless' timeouts.

    `attempts` counts the first try; callers on a tight clock (the worker
    monitor's 10 s sampling grid) ask for less than the defaults.
    """
    config = Config(
        connect_timeout=2,
        read_timeout=read_timeout,
        retries={"max_attempts": attempts, "mode": "standard"},
    )
    return session().client(service, config=config)  # type: ignore[call-overload]


def reset_clients() -> None:
    """Forget cached clients (tests that change AWS_ENDPOINT_URL call this)."""
    client.cache_clear()
    session.cache_clear()
