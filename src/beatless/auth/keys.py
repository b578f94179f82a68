"""API keys: issued once in clear, stored only as a SHA-256 digest.

A key reads `bl_<8 base32 chars>_<43 url-safe chars>` (256 random bits after
the public part). The database keeps the public prefix `bl_xxxxxxxx` (shown in
key lists, used to find the row) and the SHA-256 digest of the whole key; the
key itself is returned by `issue_api_key` once and never stored or logged.
SHA-256 without a slow hash is enough for 256-bit random secrets (nothing to
brute-force); `verify_api_key` compares digests with `hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from beatless.db.arguments import Conn, check_id, check_time
from beatless.errors import InvalidInputError

_KEY = re.compile(r"^(bl_[a-z2-7]{8})_[A-Za-z0-9_-]{43}$")
_DUMMY_DIGEST = hashlib.sha256(b"no such key").digest()


@dataclass(frozen=True)
class IssuedApiKey:
    id: int
    prefix: str
    key: str  # shown to the user once; never stored

    def __repr__(self) -> str:  # keep the key out of logs and tracebacks
        return f"IssuedApiKey(id={self.id}, prefix={self.prefix!r}, key='***')"


@dataclass(frozen=True)
class ApiKey:
    id: int
    user_id: str
    name: str
    prefix: str
    expires_at: datetime | None
    revoked_at: datetime | None


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def issue_api_key(conn: Conn, user_id: str, name: str, *, expires_at: datetime | None = None) -> IssuedApiKey:
    """A new key for `user_id`; the returned `.key` is the only copy."""
    check_id("user_id", user_id)
    if not isinstance(name, str) or not 1 <= len(name) <= 100:
        raise InvalidInputError("name", f"must be 1-100 characters, got {name!r}")
    if expires_at is not None:
        check_time("expires_at", expires_at)
    for _ in range(3):  # a 40-bit public prefix may collide, very rarely
        public = base64.b32encode(secrets.token_bytes(5)).decode().lower()
        prefix = f"bl_{public}"
        key = f"{prefix}_{secrets.token_urlsafe(32)}"
        try:
            with conn.transaction():
                row = conn.execute(
                    "INSERT INTO api_keys (user_id, name, prefix, digest, expires_at) "
                    "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                    (user_id, name, prefix, digest(key), expires_at),
                ).fetchone()
        except psycopg.errors.UniqueViolation:
            continue
        except psycopg.errors.ForeignKeyViolation:
            raise InvalidInputError("user_id", f"unknown user {user_id!r}") from None
        return IssuedApiKey(int(row[0]), prefix, key)
    raise RuntimeError("could not draw an unused API key prefix in 3 attempts")


def verify_api_key(conn: Conn, key: Any, *, touch: bool = True) -> ApiKey | None:
    """The key's record if `key` is valid now (known, not revoked, deactivated or
    expired), else None. Records `last_used_at` (at most once a minute)."""
    match = _KEY.match(key) if isinstance(key, str) else None
    row = None
    if match:
        row = conn.execute(
            "SELECT id, user_id, name, prefix, expires_at, revoked_at, digest, "
            "revoked_at IS NULL AND deactivated_at IS NULL AND (expires_at IS NULL OR expires_at > now()) "
            "FROM api_keys WHERE prefix = %s",
            (match.group(1),),
        ).fetchone()
    stored = bytes(row[6]) if row else _DUMMY_DIGEST
    presented = digest(key) if isinstance(key, str) else _DUMMY_DIGEST
    # Constant-time comparison, also when the prefix was unknown (same work either way).
    if not hmac.compare_digest(presented, stored) or row is None or not row[7]:
        return None
    if touch:
        conn.execute(
            "UPDATE api_keys SET last_used_at = now() WHERE id = %s "
            "AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
            (row[0],),
        )
    return ApiKey(int(row[0]), row[1], row[2], row[3], row[4], row[5])


def revoke_api_key(conn: Conn, key_id: int) -> ApiKey:
    """Revoke a key (idempotent: the first revocation time is kept)."""
    row = conn.execute(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s "
        "RETURNING id, user_id, name, prefix, expires_at, revoked_at",
        (key_id,),
    ).fetchone()
    if row is None:
        raise InvalidInputError("key_id", f"no API key {key_id!r}")
    return ApiKey(int(row[0]), row[1], row[2], row[3], row[4], row[5])
