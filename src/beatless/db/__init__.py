"""The PostgreSQL data layer: connection settings, connections, migrations.

`beatless.db.migrate.migrate(conn)` applies `migrations/NNNN_<name>.sql` in
order (locally: `beatless db migrate --dsn ...`; in AWS: the `db_migrate`
custom-resource Lambda on every deploy). The schema is described at the top
of `migrations/0001_credits.sql`; its invariants and lock order as they stand
now at the top of `migrations/0002_held_reservations.sql` (which moved held
holds into `credit_reservations_held` and made the held amount computed).
Amounts are BIGINT micro-credits everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# `migrate` is both a module and its function: bound here, the function wins (as callers expect).
from beatless.db.migrate import MigrationError, MigrationResult, current_version, load_migrations, migrate
from beatless.db.settings import DatabaseSettings
from beatless.lazy import lazy_exports
from beatless.settings import redact_url

# Connections are imported on first use: `beatless.db.settings` alone must not load psycopg.
if TYPE_CHECKING:
    from beatless.db.connect import Credentials, Database, SecretCredentials, database_from_env

_EXPORTS = {
    "Credentials": "beatless.db.connect",
    "Database": "beatless.db.connect",
    "SecretCredentials": "beatless.db.connect",
    "database_from_env": "beatless.db.connect",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "Credentials",
    "Database",
    "DatabaseSettings",
    "MigrationError",
    "MigrationResult",
    "SecretCredentials",
    "current_version",
    "database_from_env",
    "load_migrations",
    "migrate",
    "redact_url",
]
