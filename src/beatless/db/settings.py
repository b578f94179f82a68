"""How a process reaches PostgreSQL: the environment contract, read once.

- `DATABASE_URL`: `postgresql://user[:password]@host:port/db`, for local runs and
  tests. A password in it is refused inside AWS Lambda (`AWS_LAMBDA_FUNCTION_NAME`
  set): deployed functions use the secret.
- `DATABASE_SECRET_ARN`: AWS. A Secrets Manager secret in the RDS format, JSON with
  `host`, `port`, `username`, `password`, `dbname` (`engine` ignored). Fetched at the
  first connection, cached, fetched again once when PostgreSQL refuses the password
  (rotation).
- `DATABASE_SSLMODE`: libpq `sslmode`. With the secret: default `verify-full`; only
  `require`, `verify-ca`, `verify-full` are accepted (credentials never travel in
  plaintext). With `DATABASE_URL`: default what the URL says (libpq: `prefer`).
- `DATABASE_SSLROOTCERT`: libpq `sslrootcert`, the CA bundle the server certificate
  must chain to. Default with `verify-ca`/`verify-full`: `system` (the trust store of
  the OpenSSL that libpq uses) — right for RDS Proxy, whose certificates come from a
  public CA (ACM). A direct RDS instance presents a certificate of the RDS CAs, which
  are not public: ship the RDS CA bundle with the function and point this at it. The
  connection then fails loudly until that is done; verification is never turned off.
- `STATEMENT_TIMEOUT_MS`: per statement, default 30,000 — far below a job's Lambda
  timeout, so a hung statement fails the run while there is time to report it. The
  migration function gets a larger value from infra (index builds).
- `IDLE_IN_TRANSACTION_TIMEOUT_MS`: default 60,000 — a Lambda frozen or killed inside
  a transaction loses its locks after this.
- `DATABASE_CONNECT_TIMEOUT_SECONDS`: default 10.

Exactly one of `DATABASE_URL` / `DATABASE_SECRET_ARN`. Every error names the
variable. Nothing here ever logs or returns a password: `describe()` is the
redacted form for logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from beatless.errors import InvalidInputError
from beatless.settings import Env, env_int, env_str, redact_url

ENVIRONMENT = (
    "DATABASE_URL",
    "DATABASE_SECRET_ARN",
    "DATABASE_SSLMODE",
    "DATABASE_SSLROOTCERT",
    "STATEMENT_TIMEOUT_MS",
    "IDLE_IN_TRANSACTION_TIMEOUT_MS",
    "DATABASE_CONNECT_TIMEOUT_SECONDS",
    "AWS_LAMBDA_FUNCTION_NAME",
)
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
SECRET_SSLMODES = ("require", "verify-ca", "verify-full")
DEFAULT_STATEMENT_TIMEOUT_MS = 30_000
DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000


@dataclass(frozen=True)
class DatabaseSettings:
    url: str | None
    secret_arn: str | None
    sslmode: str | None  # None: leave libpq's default / the URL's own
    sslrootcert: str | None
    statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS
    idle_in_transaction_timeout_ms: int = DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS
    connect_timeout_seconds: int = 10

    @classmethod
    def from_env(cls, env: Env) -> DatabaseSettings:
        url = env_str(env, "DATABASE_URL")
        secret_arn = env_str(env, "DATABASE_SECRET_ARN")
        if url and secret_arn:
            raise InvalidInputError(
                "DATABASE_URL", "set either DATABASE_URL or DATABASE_SECRET_ARN, not both"
            )
        if not url and not secret_arn:
            raise InvalidInputError("DATABASE_URL", "is required (or DATABASE_SECRET_ARN)")
        if url:
            _check_url(url, in_lambda=bool(env_str(env, "AWS_LAMBDA_FUNCTION_NAME")))
        if secret_arn and not secret_arn.startswith("arn:"):
            raise InvalidInputError(
                "DATABASE_SECRET_ARN", f"must be a Secrets Manager ARN, got {secret_arn!r}"
            )
        sslmode = env_str(env, "DATABASE_SSLMODE")
        if sslmode is not None and sslmode not in SSLMODES:
            raise InvalidInputError(
                "DATABASE_SSLMODE", f"must be one of {', '.join(SSLMODES)}, got {sslmode!r}"
            )
        if secret_arn:
            sslmode = sslmode or "verify-full"
            if sslmode not in SECRET_SSLMODES:
                raise InvalidInputError(
                    "DATABASE_SSLMODE",
                    f"must be one of {', '.join(SECRET_SSLMODES)} with DATABASE_SECRET_ARN "
                    f"(credentials never travel in plaintext), got {sslmode!r}",
                )
        sslrootcert = env_str(env, "DATABASE_SSLROOTCERT")
        if sslrootcert is None and sslmode in ("verify-ca", "verify-full"):
            sslrootcert = "system"
        statement_timeout = env_int(
            env, "STATEMENT_TIMEOUT_MS", DEFAULT_STATEMENT_TIMEOUT_MS, minimum=100, maximum=3_600_000
        )
        idle_timeout = env_int(
            env,
            "IDLE_IN_TRANSACTION_TIMEOUT_MS",
            DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS,
            minimum=1_000,
            maximum=3_600_000,
        )
        connect_timeout = env_int(env, "DATABASE_CONNECT_TIMEOUT_SECONDS", 10, minimum=2, maximum=60)
        return cls(
            url=url,
            secret_arn=secret_arn,
            sslmode=sslmode,
            sslrootcert=sslrootcert,
            statement_timeout_ms=statement_timeout,
            idle_in_transaction_timeout_ms=idle_timeout,
            connect_timeout_seconds=connect_timeout,
        )

    def describe(self) -> str:
        """Where the connection goes, for logs (never a password)."""
        if self.url:
            return redact_url(self.url)
        return f"secret {self.secret_arn}"


def _check_url(url: str, *, in_lambda: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise InvalidInputError("DATABASE_URL", f"must start with postgresql://, got {redact_url(url)!r}")
    if not parts.hostname and "host=" not in parts.query:
        raise InvalidInputError("DATABASE_URL", f"has no host: {redact_url(url)!r}")
    if in_lambda and (parts.password or "password=" in parts.query):
        raise InvalidInputError(
            "DATABASE_URL",
            "carries a password inside AWS Lambda; deployed functions take credentials from "
            "DATABASE_SECRET_ARN (a password in an environment variable is readable by anyone who can "
            "read the function's configuration)",
        )
