"""Reading the environment, once, at the edge.

Entry points (Lambda files, the worker app, the CLI) turn ``os.environ`` into
typed settings objects with these helpers; core code receives the objects and
never reads the environment itself. Every error names the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from beatless.errors import InvalidInputError

Env = Mapping[str, str]


def env_str(env: Env, name: str, default: str | None = None, *, required: bool = False) -> str | None:
    value = env.get(name)
    if value is None or not value.strip():
        if required:
            raise InvalidInputError(name, "is required")
        return default
    return value.strip()


def env_required(env: Env, name: str) -> str:
    value = env_str(env, name, required=True)
    assert value is not None
    return value


def env_int(
    env: Env, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise InvalidInputError(name, f"must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise InvalidInputError(name, f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidInputError(name, f"must be at most {maximum}, got {value}")
    return value


def env_float(
    env: Env, name: str, default: float, *, minimum: float | None = None, maximum: float | None = None
) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise InvalidInputError(name, f"must be a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidInputError(name, f"must be a finite number, got {raw!r}")
    if minimum is not None and value < minimum:
        raise InvalidInputError(name, f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidInputError(name, f"must be at most {maximum}, got {value}")
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_bool(env: Env, name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InvalidInputError(name, f"must be true or false, got {raw!r}")


def env_list(env: Env, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def redact_url(url: str) -> str:
    """`url` with any password (in the user info or a `password=` query item) replaced by ***,
    for logs and summaries."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}"
    query = "&".join(
        f"{key}=***" if key == "password" else f"{key}={value}" if sep else key
        for key, sep, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
