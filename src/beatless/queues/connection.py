"""Connecting to the Redis broker: URL from settings, password kept apart.

In AWS the AUTH password lives in Secrets Manager, never in an environment
variable: `SecretPassword` fetches it once, caches it, and fetches it again
when Redis refuses it (the secret was rotated). `Broker` reads queue depth
and retries a reading once with a freshly fetched password on such a refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import redis
from botocore.exceptions import BotoCoreError, ClientError
from redis.backoff import ConstantBackoff
from redis.retry import Retry

from beatless.errors import InvalidInputError
from beatless.queues.depth import BrokerAuthenticationError, BrokerUnreadableError, DepthReader, DepthReading
from beatless.queues.transport import TransportOptions, validate_broker_url, validate_queue_names
from beatless.secrets import CachedSecret
from beatless.settings import Env, env_list, env_str, redact_url

# A scheduled reading must fail fast rather than hang past its slot.
SOCKET_TIMEOUT_SECONDS = 2.0


def connect(url: str, password: str | None = None, *, timeout: float = SOCKET_TIMEOUT_SECONDS) -> redis.Redis:
    """A Redis client for `url` (redis:// or rediss://, certificates verified)."""
    validate_broker_url(url)
    _refuse_unchecked_hostname(url)
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # One quick retry on a fresh connection covers a pooled connection that
        # Redis closed while the Lambda was frozen; more would outlast a slot.
        "retry": Retry(ConstantBackoff(0.05), retries=1),
        "health_check_interval": 0,
    }
    if password is not None:
        options["password"] = password
    if url.startswith("rediss://"):
        options["ssl_cert_reqs"] = "required"
        options["ssl_check_hostname"] = True
    return redis.Redis.from_url(url, **options)


def _refuse_unchecked_hostname(url: str) -> None:
    # validate_broker_url guards ssl_cert_reqs; a certificate checked against
    # no host name is just as open to interception.
    query = {k.lower(): v for k, v in parse_qs(urlsplit(url).query).items()}
    if any(v.lower() in ("false", "0", "no", "off") for v in query.get("ssl_check_hostname", [])):
        raise InvalidInputError("BROKER_URL", "ssl_check_hostname must not disable host name verification")


class PasswordSource(Protocol):
    def get(self) -> str: ...

    def refresh(self) -> str: ...


class SecretPassword:
    """The Redis AUTH password: a Secrets Manager secret's SecretString (`CachedSecret`).

    A failure to fetch it is a failed reading (`BrokerUnreadableError`), not a crash."""

    def __init__(self, secretsmanager: Any, secret_id: str) -> None:
        self.secret_id = secret_id
        self._secret = CachedSecret(secretsmanager, secret_id)

    def get(self) -> str:
        return self._fetch(refresh=False)

    def refresh(self) -> str:
        return self._fetch(refresh=True)

    def _fetch(self, *, refresh: bool) -> str:
        try:
            return self._secret.get(refresh=refresh)
        except (ClientError, BotoCoreError) as exc:
            raise BrokerUnreadableError(
                f"could not fetch the Redis password from {self.secret_id}: {exc}"
            ) from exc
        except ValueError:
            # Deliberately does not echo the secret's content.
            raise BrokerUnreadableError(
                f"secret {self.secret_id} has no SecretString to use as the Redis password"
            ) from None


class Broker:
    """Depth readings from one Redis, reconnecting with a fresh password when
    Redis refuses the cached one."""

    def __init__(
        self,
        url: str,
        queues: Iterable[str],
        options: TransportOptions,
        *,
        password: PasswordSource | None = None,
        connector: Callable[[str, str | None], redis.Redis] = connect,
        route_cache: bool = True,
    ) -> None:
        self.url = url
        self.queues = tuple(queues)
        self.options = options
        self.route_cache = route_cache
        self._password = password
        self._connector = connector
        self._reader: DepthReader | None = None
        self.password_refreshes = 0

    @property
    def redacted_url(self) -> str:
        """Where this broker is, for logs and summaries (never a password)."""
        return redact_url(self.url)

    def _build(self, password: str | None) -> DepthReader:
        if self._reader is not None:
            self._reader.client.close()
        self._reader = DepthReader(
            self._connector(self.url, password), self.queues, self.options, route_cache=self.route_cache
        )
        return self._reader

    def read(self) -> DepthReading:
        """One reading. Raises `BrokerUnreadableError` (never returns made-up zeros)."""
        reader = self._reader or self._build(self._password.get() if self._password else None)
        try:
            return reader.read()
        except BrokerAuthenticationError:
            if self._password is None:
                raise
        # Refused: the secret may have been rotated. Fetch it again, once.
        self.password_refreshes += 1
        return self._build(self._password.refresh()).read()

    def client(self) -> redis.Redis:
        """The connection itself, for a producer (`beatless.queues.producer`)."""
        reader = self._reader or self._build(self._password.get() if self._password else None)
        return reader.client

    def close(self) -> None:
        if self._reader is not None:
            self._reader.client.close()
            self._reader = None


# The variables of `Need.BROKER` (set by infra for every job that needs the broker).
BROKER_ENVIRONMENT = ("BROKER_URL", "BROKER_PASSWORD_SECRET_ARN", "QUEUES", "BROKER_TRANSPORT_OPTIONS")


@dataclass(frozen=True)
class BrokerSettings:
    """Where the Redis broker is, its AUTH secret, the queues to read and their key layout.

    Every error names the variable, before anything is read."""

    url: str
    queues: tuple[str, ...]
    transport: TransportOptions = field(default_factory=TransportOptions)
    password_secret_arn: str | None = None

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)

    def __repr__(self) -> str:
        # Keep a URL password out of any log or traceback that prints settings.
        return (
            f"BrokerSettings(url={self.redacted_url!r}, queues={self.queues!r}, "
            f"password_secret_arn={self.password_secret_arn!r})"
        )

    @classmethod
    def from_env(cls, env: Env) -> BrokerSettings:
        url = validate_broker_url(env_str(env, "BROKER_URL"))
        secret = env_str(env, "BROKER_PASSWORD_SECRET_ARN")
        if secret and urlsplit(url).password:
            raise InvalidInputError(
                "BROKER_URL",
                "carries a password while BROKER_PASSWORD_SECRET_ARN is set; keep the password "
                "only in the secret",
            )
        return cls(
            url=url,
            queues=validate_queue_names(list(env_list(env, "QUEUES")), "QUEUES"),
            transport=TransportOptions.from_json(env_str(env, "BROKER_TRANSPORT_OPTIONS")),
            password_secret_arn=secret,
        )


def broker_for(settings: BrokerSettings, secretsmanager: Any = None) -> Broker:
    """The depth source `settings` describe (password from Secrets Manager when set)."""
    password = None
    if settings.password_secret_arn:
        if secretsmanager is None:
            raise ValueError("BROKER_PASSWORD_SECRET_ARN is set: a secretsmanager client is required")
        password = SecretPassword(secretsmanager, settings.password_secret_arn)
    return Broker(settings.url, settings.queues, settings.transport, password=password)
