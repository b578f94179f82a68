"""Shared fixtures: real servers on free ports, moto for AWS.

Session-scoped servers are started once; each test gets a clean state
(Redis FLUSHALL, a fresh PostgreSQL database, a reset moto server).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Set before anything imports aws_cdk (jsii reads it at start-up).
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
_LOCAL_NODE = Path(__file__).resolve().parent.parent / "node_modules" / ".bin" / "node"
if _LOCAL_NODE.exists():
    os.environ.setdefault("JSII_NODE", str(_LOCAL_NODE))

from beatless import aws as beatless_aws  # noqa: E402
from beatless.local.servers import (  # noqa: E402
    MotoServer,
    PostgresServer,
    RedisServer,
    aws_environment,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A clean Redis database on the shared session server."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis server of this test's own, for tests that stop or kill it."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for this test, dropped afterwards."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.dsn_for(name)
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """AWS pointed at a freshly reset moto server, in this process and in any
    child process started with ``os.environ``. Yields the endpoint URL."""
    moto_server.reset()
    for key, value in aws_environment(moto_server.url).items():
        monkeypatch.setenv(key, value)
    beatless_aws.reset_clients()
    yield moto_server.url
    beatless_aws.reset_clients()


@pytest.fixture
def aws_inprocess(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto in this process only (fast; child processes do not see it)."""
    from moto import mock_aws

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for key, value in aws_environment("unused").items():
        if key != "AWS_ENDPOINT_URL":
            monkeypatch.setenv(key, value)
    beatless_aws.reset_clients()
    with mock_aws():
        yield
    beatless_aws.reset_clients()


# mypy over the whole tree takes minutes (aws_cdk's stubs): it starts in the background as
# soon as the tests are collected, beside the others, and test_mypy_clean waits for it.
MYPY_KEY = pytest.StashKey[subprocess.Popen[str]]()


def pytest_collection_finish(session: pytest.Session) -> None:
    if any(item.name == "test_mypy_clean" for item in session.items):
        session.config.stash[MYPY_KEY] = subprocess.Popen(
            [str(Path(sys.executable).with_name("mypy")), "--no-incremental"],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    proc = session.config.stash.get(MYPY_KEY, None)
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture
def mypy_run(request: pytest.FixtureRequest) -> subprocess.Popen[str]:
    """The background mypy run of this session (see pytest_collection_finish)."""
    return request.config.stash[MYPY_KEY]
