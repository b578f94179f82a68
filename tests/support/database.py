"""Helpers for tests and benchmarks against a real PostgreSQL server (not shipped: tests/support).

- `migrated_database(server)`: a fresh database with the whole schema, cloned
  from a template migrated once per server (CREATE DATABASE ... TEMPLATE is
  much cheaper than migrating every test's database).
- `snapshot(conn)`: every row of every table, to prove a database unchanged.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import psycopg

from beatless.db.migrate import load_migrations, migrate


class Server(Protocol):
    @property
    def dsn(self) -> str: ...

    def dsn_for(self, dbname: str) -> str: ...


_templates: dict[str, str] = {}
_lock = threading.Lock()


def template_database(server: Server) -> str:
    """The name of a database on `server` holding the migrated schema (made once)."""
    digest = hashlib.sha256("".join(m.checksum for m in load_migrations()).encode()).hexdigest()[:12]
    name = f"beatless_template_{digest}"
    with _lock:
        if _templates.get(server.dsn) == name:
            return name
        with psycopg.connect(server.dsn, autocommit=True) as admin:
            exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                admin.execute(f'CREATE DATABASE "{name}"')
                with psycopg.connect(server.dsn_for(name), autocommit=True) as conn:
                    migrate(conn)
        _templates[server.dsn] = name
        return name


@contextmanager
def migrated_database(server: Server) -> Iterator[str]:
    """A new migrated database for one test; dropped afterwards. Yields its DSN."""
    template = template_database(server)
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield server.dsn_for(name)
    finally:
        with psycopg.connect(server.dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def snapshot(conn: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table in the public schema, in a stable order."""
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        ).fetchall()
    ]
    return {
        table: sorted((tuple(row) for row in conn.execute(f'SELECT * FROM "{table}"').fetchall()), key=repr)
        for table in tables
    }
