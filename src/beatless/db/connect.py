"""Opening PostgreSQL connections from `DatabaseSettings`.

Every connection is in autocommit mode (write effects inside
`with conn.transaction():` blocks: one block = one atomic chunk), carries an
`application_name` (visible in `pg_stat_activity`), and starts with
`statement_timeout`, `idle_in_transaction_session_timeout` and `TimeZone=UTC`
as startup options, so they hold from the first statement on.

With `DATABASE_SECRET_ARN` the credentials come from Secrets Manager: fetched
once, cached for the life of the process (a warm Lambda reuses them), and
fetched again once when PostgreSQL refuses the password — the secret was
rotated. A second refusal raises.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from beatless.db.settings import DatabaseSettings
from beatless.errors import InvalidInputError
from beatless.secrets import CachedSecret

# SQLSTATEs of a refused login: invalid_password, invalid_authorization_specification.
_AUTH_SQLSTATES = {"28P01", "28000"}


@dataclass(frozen=True)
class Credentials:
    host: str
    port: int
    user: str
    password: str
    dbname: str

    def __repr__(self) -> str:  # never print the password
        return (
            f"Credentials(host={self.host!r}, port={self.port}, user={self.user!r}, "
            f"dbname={self.dbname!r}, password='***')"
        )


def parse_secret(secret_string: str, field: str = "DATABASE_SECRET_ARN") -> Credentials:
    """An RDS-format secret (JSON: host, port, username, password, dbname)."""
    try:
        data = json.loads(secret_string)
    except json.JSONDecodeError:
        raise InvalidInputError(field, "the secret is not JSON (expected the RDS format)") from None
    if not isinstance(data, dict):
        raise InvalidInputError(field, "the secret must be a JSON object (the RDS format)")
    values: dict[str, Any] = {}
    for key in ("host", "username", "password"):
        value = data.get(key)
        if not isinstance(value, str) or not value:
            raise InvalidInputError(f"{field}.{key}", "missing or not a non-empty string in the secret")
        values[key] = value
    port = data.get("port", 5432)
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise InvalidInputError(f"{field}.port", "must be a TCP port number")
    dbname = data.get("dbname", "postgres")
    if not isinstance(dbname, str) or not dbname:
        raise InvalidInputError(f"{field}.dbname", "must be a non-empty string")
    return Credentials(values["host"], port, values["username"], values["password"], dbname)


class SecretCredentials:
    """Credentials from a Secrets Manager secret in the RDS format, cached;
    `get(refresh=True)` fetches them again (after a refused login)."""

    def __init__(self, client: Any, secret_arn: str) -> None:
        self.secret_arn = secret_arn
        self._secret = CachedSecret(client, secret_arn)

    @property
    def fetches(self) -> int:
        return self._secret.fetches

    def get(self, *, refresh: bool = False) -> Credentials:
        return parse_secret(self._secret.get(refresh=refresh))


def auth_failed(error: psycopg.OperationalError) -> bool:
    """Whether a failed connection attempt was a refused login (not a network error)."""
    if getattr(error, "sqlstate", None) in _AUTH_SQLSTATES:
        return True
    text = str(error)
    return "password authentication failed" in text or "no password supplied" in text


class Database:
    """Connects with one `DatabaseSettings`; holds the cached credentials."""

    def __init__(self, settings: DatabaseSettings, credentials: SecretCredentials | None = None) -> None:
        if settings.secret_arn and credentials is None:
            raise InvalidInputError("DATABASE_SECRET_ARN", "is set but no Secrets Manager client was given")
        self.settings = settings
        self.credentials = credentials

    def connect(self, application_name: str) -> psycopg.Connection[Any]:
        options = (
            f"-c statement_timeout={self.settings.statement_timeout_ms} "
            f"-c idle_in_transaction_session_timeout={self.settings.idle_in_transaction_timeout_ms} "
            "-c TimeZone=UTC"
        )
        params: dict[str, Any] = {
            "autocommit": True,
            "application_name": application_name[:63],
            "connect_timeout": self.settings.connect_timeout_seconds,
            "options": options,
        }
        if self.settings.sslmode:
            params["sslmode"] = self.settings.sslmode
        if self.settings.sslrootcert:
            params["sslrootcert"] = self.settings.sslrootcert
        if self.settings.url:
            return psycopg.connect(self.settings.url, **params)
        assert self.credentials is not None
        attempt: Callable[[Credentials], psycopg.Connection[Any]] = lambda c: psycopg.connect(  # noqa: E731
            host=c.host, port=c.port, user=c.user, password=c.password, dbname=c.dbname, **params
        )
        try:
            return attempt(self.credentials.get())
        except psycopg.OperationalError as error:
            if not auth_failed(error):
                raise
        # The password was refused: the secret may have been rotated since it was cached.
        return attempt(self.credentials.get(refresh=True))


def database_from_env(env: Any) -> Database:
    """The edge helper: settings from `env`, and a Secrets Manager client when needed."""
    settings = DatabaseSettings.from_env(env)
    credentials = None
    if settings.secret_arn:
        from beatless.aws import client

        credentials = SecretCredentials(client("secretsmanager"), settings.secret_arn)
    return Database(settings, credentials)
