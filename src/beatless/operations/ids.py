"""Operation ids: given by the caller, or derived from the task and its parameters.

An operation id is the idempotency key of an operation's effect, of its credit
hold and of its progress stream, so the same request sent twice (a double
click, a retried HTTP call, a redelivered message) is one operation.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from beatless.errors import InvalidInputError

# Letters, digits and . _ : - ; `#` is kept for the attempt suffix of a hold's key.
_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def check_operation_id(value: Any, field: str = "operation_id") -> str:
    if not isinstance(value, str) or not _PATTERN.match(value):
        raise InvalidInputError(
            field,
            f"must be 1-128 characters of letters, digits and . _ : - (starting with a letter or "
            f"digit), got {value!r}",
        )
    return value


def canonical_json(params: Mapping[str, Any]) -> str:
    """The parameters as one canonical JSON text (sorted keys, no spaces)."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def derive_operation_id(task: str, params: Mapping[str, Any]) -> str:
    """`<task>:<first 32 hex digits of SHA-256(canonical parameters)>`: the same task with
    the same (validated, defaults filled) parameters is the same operation."""
    digest = hashlib.sha256(canonical_json(params).encode()).hexdigest()[:32]
    return check_operation_id(f"{task}:{digest}")
