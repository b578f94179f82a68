"""Arguments of the domain APIs on PostgreSQL (credits, auth, graphs), checked alike.

Every error names the argument (`InvalidInputError.field`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from beatless.errors import InvalidInputError

Conn = Any  # psycopg.Connection; kept loose so callers may pass any psycopg connection type

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_id(field: str, value: Any) -> str:
    """An identifier of a user, graph, ...: 1-64 characters of A-Z a-z 0-9 _ - (no path tricks)."""
    if not isinstance(value, str) or not _ID.match(value):
        raise InvalidInputError(field, f"must be 1-64 characters of A-Z a-z 0-9 _ -, got {value!r}")
    return value


def check_time(field: str, value: Any) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInputError(field, f"must be a datetime with a time zone, got {value!r}")
    return value
