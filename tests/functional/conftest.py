"""Fixtures of the PostgreSQL-backed job tests."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from beatless.jobs.resources import reset_resources
from beatless.local.servers import PostgresServer
from tests.support.database import migrated_database


@pytest.fixture
def dsn(postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated database of this test's own, the job handlers pointed at it."""
    with migrated_database(postgres_server) as database:
        monkeypatch.delenv("DATABASE_SECRET_ARN", raising=False)
        monkeypatch.setenv("DATABASE_URL", database)
        reset_resources()
        yield database
        reset_resources()


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection
