"""Reading the environment, once, at the edge.

Entry points (Lambda files, the worker app, the CLI) turn ``os.environ`` into
typed settings objects with these helpers; core code receives the objects and
never reads the environment itself. Every error names the variable.
"""

from __future__ import annotations

from collections.abc import Mapping

from beatless.errors import InvalidInput

Env = Mapping[str, str]


def env_str(env: Env, name: str, default: str | None = None, *, required: bool = False) -> str | None:
    value = env.get(name)
    if value is None or not value.strip():
        if required:
            raise InvalidInput(name, "is required")
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
        raise InvalidInput(name, f"must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise InvalidInput(name, f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidInput(name, f"must be at most {maximum}, got {value}")
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
        raise InvalidInput(name, f"must be a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidInput(name, f"must be a finite number, got {raw!r}")
    if minimum is not None and value < minimum:
        raise InvalidInput(name, f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidInput(name, f"must be at most {maximum}, got {value}")
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
    raise InvalidInput(name, f"must be true or false, got {raw!r}")


def env_list(env: Env, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    return tuple(part.strip() for part in raw.split(",") if part.strip())
