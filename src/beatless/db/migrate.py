"""Versioned schema migrations: `migrations/NNNN_<name>.sql`, applied in order.

`migrate(conn)` applies every migration the database has not seen, each in its
own transaction, and records it in `schema_migrations` (version, name, SHA-256
of the file, when, how long). Every transaction first takes one transaction-level
advisory lock, so concurrent migrators (two deploys, many test processes)
serialize: the second finds the work done. Applying twice is a no-op.

Refused, before anything is applied:
- a migration already applied whose file changed (checksum mismatch): a shipped
  migration is never edited, add a new one;
- a database that has a version this code does not know BELOW its newest known
  version (a gap: this code misses a migration). Versions above every known one
  are accepted and reported as `ahead` — the database was migrated by a newer
  release (a deploy that rolled back); migrations are written to keep the
  previous release working (expand, then contract in a later release).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from beatless.errors import BeatlessError

# An arbitrary constant: every Beatless migrator locks the same key.
ADVISORY_LOCK_KEY = 0x6265_6174_6C65_7373 & 0x7FFF_FFFF_FFFF_FFFF  # "beatless"
_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version text PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL
)
"""


class MigrationError(BeatlessError):
    """The migrations cannot be applied safely; nothing more was applied."""


@dataclass(frozen=True)
class Migration:
    version: str  # "0001"
    name: str  # "credits"
    sql: str
    checksum: str  # SHA-256 hex of the file's bytes

    @property
    def label(self) -> str:
        return f"{self.version}_{self.name}"


@dataclass(frozen=True)
class MigrationResult:
    applied: tuple[str, ...]  # versions applied by this call, in order
    version: str | None  # the newest version the database has now
    ahead: tuple[str, ...] = ()  # versions in the database that this code does not know

    def as_dict(self) -> dict[str, Any]:
        return {"applied": list(self.applied), "version": self.version, "ahead": list(self.ahead)}


def load_migrations() -> tuple[Migration, ...]:
    """The migrations shipped in `beatless/db/migrations/`, ordered by version."""
    folder = resources.files("beatless.db") / "migrations"
    found: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE.match(entry.name)
        if not match:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_<lowercase_name>.sql")
        data = entry.read_bytes()
        found.append(
            Migration(
                version=match["version"],
                name=match["name"],
                sql=data.decode("utf-8"),
                checksum=hashlib.sha256(data).hexdigest(),
            )
        )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    duplicates = sorted({v for v in versions if versions.count(v) > 1})
    if duplicates:
        raise MigrationError(f"two migration files share version {duplicates[0]}")
    return tuple(found)


def migrate(conn: Any, migrations: Sequence[Migration] | None = None) -> MigrationResult:
    """Apply the pending migrations on `conn` (a psycopg connection in autocommit
    mode, or idle). Raises `MigrationError` (nothing further applied) or the
    database's error (the failing migration rolled back, earlier ones kept)."""
    if conn.info.transaction_status != 0:  # psycopg.pq.TransactionStatus.IDLE
        raise MigrationError("migrate() needs a connection that is not inside a transaction")
    known = tuple(load_migrations() if migrations is None else migrations)
    applied: list[str] = []
    ahead: tuple[str, ...] = ()
    for migration in known:
        with conn.transaction():
            ahead = _lock_and_check(conn, known)
            if _is_applied(conn, migration.version):
                continue
            started = time.perf_counter()
            conn.execute(migration.sql)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum, duration_ms) "
                "VALUES (%s, %s, %s, %s)",
                (
                    migration.version,
                    migration.name,
                    migration.checksum,
                    round((time.perf_counter() - started) * 1000),
                ),
            )
            applied.append(migration.version)
    if not known:
        with conn.transaction():
            ahead = _lock_and_check(conn, known)
    return MigrationResult(applied=tuple(applied), version=current_version(conn), ahead=ahead)


def current_version(conn: Any) -> str | None:
    """The newest applied version, or None on a database never migrated."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
    if not exists:
        return None
    row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return row[0] if row else None


def _lock_and_check(conn: Any, known: Sequence[Migration]) -> tuple[str, ...]:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
    conn.execute(_CREATE_TABLE)
    recorded = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
    by_version = {m.version: m for m in known}
    newest_known = max(by_version, default="")
    for version, checksum in sorted(recorded.items()):
        migration = by_version.get(version)
        if migration is None:
            if version < newest_known:
                raise MigrationError(
                    f"the database has migration {version}, which this code does not know, "
                    f"below this code's newest ({newest_known}): deploy the code that has it"
                )
            continue
        if migration.checksum != checksum:
            raise MigrationError(
                f"migration {migration.label} was applied with checksum {checksum[:12]}… but the file "
                f"now has {migration.checksum[:12]}…: never edit an applied migration, add a new one"
            )
    return tuple(sorted(v for v in recorded if v not in by_version))


def _is_applied(conn: Any, version: str) -> bool:
    row = conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (version,)).fetchone()
    return row is not None
