"""The one cache of Secrets Manager values (standard library: the client is passed in).

Every credential Beatless reads (the database's, Redis' AUTH token) comes
through `CachedSecret`: fetched on first use, kept for the life of the process
(a warm Lambda reuses it), fetched again only when the service refused the
cached value — the secret was rotated.
"""

from __future__ import annotations

import threading
from typing import Any


class CachedSecret:
    """A Secrets Manager secret's `SecretString`, fetched once and kept.

    `get()` returns the cached value (fetching it the first time);
    `get(refresh=True)` fetches it again — call that once when the service
    refused the cached credential. `fetches` counts the calls made. Errors of
    the call propagate (callers decide whether a missing credential is a failed
    reading or a failed run); a secret without a string value raises
    `ValueError` without echoing anything of the secret.
    """

    def __init__(self, secretsmanager: Any, secret_id: str) -> None:
        self.client = secretsmanager
        self.secret_id = secret_id
        self._value: str | None = None
        self._lock = threading.Lock()
        self.fetches = 0

    def get(self, *, refresh: bool = False) -> str:
        with self._lock:
            if self._value is None or refresh:
                response = self.client.get_secret_value(SecretId=self.secret_id)
                self.fetches += 1
                value = response.get("SecretString")
                if not isinstance(value, str) or not value:
                    raise ValueError(f"secret {self.secret_id} has no SecretString")
                self._value = value
            return self._value

    def __repr__(self) -> str:  # never the value
        return f"CachedSecret({self.secret_id!r}, fetched={self._value is not None})"
