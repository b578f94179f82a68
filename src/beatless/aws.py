"""The one place that builds boto3 clients.

Core code takes clients as arguments; entry points (through the job runtime's
resources) call `client(...)` here. `AWS_ENDPOINT_URL` (read by botocore
itself) points every client at a moto server locally and in tests. Clients are
cached per process so a warm Lambda reuses its connections.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Literal, overload

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_dynamodb import DynamoDBServiceResource
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_scheduler import EventBridgeSchedulerClient
    from mypy_boto3_secretsmanager import SecretsManagerClient

# Short timeouts and few retries: a scheduled job that hangs on an AWS call
# for minutes is worse than one that fails and is retried on the next tick.
DEFAULT_READ_TIMEOUT_SECONDS = 10.0
DEFAULT_ATTEMPTS = 3


@functools.cache
def session() -> boto3.Session:
    return boto3.Session()


@overload
def client(
    service: Literal["cloudwatch"], *, read_timeout: float = ..., attempts: int = ...
) -> CloudWatchClient: ...
@overload
def client(service: Literal["ecs"], *, read_timeout: float = ..., attempts: int = ...) -> ECSClient: ...
@overload
def client(service: Literal["ec2"], *, read_timeout: float = ..., attempts: int = ...) -> EC2Client: ...
@overload
def client(service: Literal["s3"], *, read_timeout: float = ..., attempts: int = ...) -> S3Client: ...
@overload
def client(
    service: Literal["scheduler"], *, read_timeout: float = ..., attempts: int = ...
) -> EventBridgeSchedulerClient: ...
@overload
def client(
    service: Literal["secretsmanager"], *, read_timeout: float = ..., attempts: int = ...
) -> SecretsManagerClient: ...
@overload  # no stubs installed for Lambda
def client(service: Literal["lambda"], *, read_timeout: float = ..., attempts: int = ...) -> Any: ...
@overload  # no stubs installed for Auto Scaling
def client(service: Literal["autoscaling"], *, read_timeout: float = ..., attempts: int = ...) -> Any: ...
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
    return _client(service, read_timeout, attempts)


@functools.cache
def _client(service: str, read_timeout: float, attempts: int) -> Any:
    config = Config(
        connect_timeout=2,
        read_timeout=read_timeout,
        retries={"max_attempts": attempts, "mode": "standard"},
    )
    return session().client(service, config=config)  # type: ignore[call-overload]


@functools.cache
def dynamodb() -> DynamoDBServiceResource:
    """The DynamoDB resource (tables with plain Python values), with Beatless' timeouts."""
    config = Config(
        connect_timeout=2,
        read_timeout=DEFAULT_READ_TIMEOUT_SECONDS,
        retries={"max_attempts": DEFAULT_ATTEMPTS, "mode": "standard"},
    )
    return session().resource("dynamodb", config=config)


def reset_clients() -> None:
    """Forget cached clients (tests that change AWS_ENDPOINT_URL call this)."""
    _client.cache_clear()
    dynamodb.cache_clear()
    session.cache_clear()
