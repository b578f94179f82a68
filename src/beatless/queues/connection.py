"""Connecting to the Redis broker: URL from settings, password kept apart.

In AWS the AUTH password lives in Secrets Manager, never in an environment
variable: `SecretPassword` fetches it once, caches it, and fetches it again
when Redis refuses it (the secret was rotated). `Broker` reads queue depth
and retries a reading once with a freshly fetched password on such a refusal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import redis
from botocore.exceptions import BotoCoreError, ClientError
from redis.backoff import ConstantBackoff
from redis.retry import Retry

from beatless.broker import TransportOptions, validate_broker_url
from beatless.errors import InvalidInput
from beatless.queues.depth import BrokerAuthenticationFailed, BrokerUnreadable, DepthReader, DepthReading

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
        raise InvalidInput("BROKER_URL", "ssl_check_hostname must not disable host name verification")


class PasswordSource(Protocol):
    def get(self) -> str: ...

    def refresh(self) -> str: ...


class SecretPassword:
    """The Redis AUTH password: a Secrets Manager secret's SecretString."""

    def __init__(self, secretsmanager: Any, secret_id: str) -> None:
        self._client = secretsmanager
        self.secret_id = secret_id
        self._value: str | None = None

    def get(self) -> str:
        if self._value is None:
            return self.refresh()
        return self._value

    def refresh(self) -> str:
        try:
            response = self._client.get_secret_value(SecretId=self.secret_id)
        except (ClientError, BotoCoreError) as exc:
            # Without the password Redis cannot be read: a failed reading, not a crash.
            raise BrokerUnreadable(
                f"could not fetch the Redis password from {self.secret_id}: {exc}"
            ) from exc
        value = response.get("SecretString")
        if not isinstance(value, str) or not value:
            # Deliberately does not echo the secret's content.
            raise BrokerUnreadable(
                f"secret {self.secret_id} has no SecretString to use as the Redis password"
            )
        self._value = value
        return value


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

    def _build(self, password: str | None) -> DepthReader:
        if self._reader is not None:
            self._reader.client.close()
        self._reader = DepthReader(
            self._connector(self.url, password), self.queues, self.options, route_cache=self.route_cache
        )
        return self._reader

    def read(self) -> DepthReading:
        """One reading. Raises `BrokerUnreadable` (never returns made-up zeros)."""
        reader = self._reader or self._build(self._password.get() if self._password else None)
        try:
            return reader.read()
        except BrokerAuthenticationFailed:
            if self._password is None:
                raise
        # Refused: the secret may have been rotated. Fetch it again, once.
        self.password_refreshes += 1
        return self._build(self._password.refresh()).read()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.client.close()
            self._reader = None
