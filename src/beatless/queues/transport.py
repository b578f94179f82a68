"""How Celery (kombu) lays out a queue in Redis, and how to reach the broker.

The worker and the monitor read the same `BROKER_TRANSPORT_OPTIONS` JSON, so
the keys the monitor counts are exactly the keys the worker fills.

kombu's Redis transport keeps one list per priority step: the step-0 list is
named after the queue, the others are ``<queue><sep><step>``; every key,
including the ``unacked`` hash of delivered-but-unacknowledged messages, is
prefixed with ``global_keyprefix``. See kombu ``Channel._q_for_pri`` and
``Channel._size``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from beatless.errors import InvalidInputError

KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_DEFAULT_PRIORITY_STEPS: tuple[int, ...] = (0, 3, 6, 9)
# Beatless' default: one list per Celery priority, so every level of the
# product's priority scale (beatless.queues.priorities) is served in order. The
# worker and the monitor both default to this through TransportOptions.
BEATLESS_PRIORITY_STEPS: tuple[int, ...] = tuple(range(10))
KOMBU_UNACKED_KEY = "unacked"
KOMBU_MAX_PRIORITY = 9

# Options the monitor understands; the worker may pass others to kombu as is.
_DEPTH_OPTIONS = {"priority_steps", "sep", "global_keyprefix", "unacked_key"}


@dataclass(frozen=True)
class TransportOptions:
    """The subset of kombu's Redis transport options that decides key names."""

    priority_steps: tuple[int, ...] = BEATLESS_PRIORITY_STEPS
    sep: str = KOMBU_PRIORITY_SEP
    global_keyprefix: str = ""
    unacked_key: str = KOMBU_UNACKED_KEY
    # Everything else from the JSON, passed through to kombu by the worker.
    extra: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_mapping(
        cls, options: Mapping[str, Any], field: str = "BROKER_TRANSPORT_OPTIONS"
    ) -> TransportOptions:
        if not isinstance(options, Mapping):
            raise InvalidInputError(field, f"must be a JSON object, got {type(options).__name__}")
        steps = options.get("priority_steps", BEATLESS_PRIORITY_STEPS)
        if (
            not isinstance(steps, list | tuple)
            or not steps
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in steps)
        ):
            raise InvalidInputError(f"{field}.priority_steps", "must be a non-empty list of integers")
        if list(steps) != sorted(set(steps)) or steps[0] != 0 or steps[-1] > KOMBU_MAX_PRIORITY:
            raise InvalidInputError(
                f"{field}.priority_steps",
                f"must be strictly increasing, start at 0 and stay within 0..{KOMBU_MAX_PRIORITY}; "
                f"got {list(steps)}",
            )
        strings = {}
        for key, default in (
            ("sep", KOMBU_PRIORITY_SEP),
            ("global_keyprefix", ""),
            ("unacked_key", KOMBU_UNACKED_KEY),
        ):
            value = options.get(key, default)
            if not isinstance(value, str):
                raise InvalidInputError(f"{field}.{key}", f"must be a string, got {type(value).__name__}")
            strings[key] = value
        if not strings["sep"]:
            raise InvalidInputError(f"{field}.sep", "must not be empty")
        if not strings["unacked_key"]:
            raise InvalidInputError(f"{field}.unacked_key", "must not be empty")
        extra = tuple(sorted((k, v) for k, v in options.items() if k not in _DEPTH_OPTIONS))
        return cls(priority_steps=tuple(steps), extra=extra, **strings)

    @classmethod
    def from_json(cls, text: str | None, field: str = "BROKER_TRANSPORT_OPTIONS") -> TransportOptions:
        if text is None or not text.strip():
            return cls()
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(field, f"is not valid JSON ({exc.msg} at position {exc.pos})") from None
        return cls.from_mapping(parsed, field)

    def as_kombu_options(self) -> dict[str, Any]:
        """The dict to give Celery as ``broker_transport_options``."""
        options: dict[str, Any] = dict(self.extra)
        options["priority_steps"] = list(self.priority_steps)
        options["sep"] = self.sep
        options["unacked_key"] = self.unacked_key
        if self.global_keyprefix:
            options["global_keyprefix"] = self.global_keyprefix
        return options

    def priority_bucket(self, celery_priority: int) -> int:
        """The step a message of `celery_priority` lands in (kombu rounds down)."""
        bucket = self.priority_steps[0]
        for step in self.priority_steps:
            if step <= celery_priority:
                bucket = step
        return bucket

    def queue_list_key(self, queue: str, step: int) -> str:
        name = f"{queue}{self.sep}{step}" if step else queue
        return self.global_keyprefix + name

    def queue_list_keys(self, queue: str) -> list[str]:
        """Every Redis list that holds pending messages of `queue`."""
        return [self.queue_list_key(queue, step) for step in self.priority_steps]

    @property
    def unacked_hash_key(self) -> str:
        return self.global_keyprefix + self.unacked_key


def validate_queue_names(names: list[str], field: str = "QUEUES") -> tuple[str, ...]:
    """Queue names as the monitor and worker accept them."""
    cleaned = tuple(n.strip() for n in names if n.strip())
    if not cleaned:
        raise InvalidInputError(field, "must name at least one queue")
    if len(set(cleaned)) != len(cleaned):
        raise InvalidInputError(field, f"lists a queue twice: {', '.join(cleaned)}")
    for name in cleaned:
        if any(ch.isspace() for ch in name) or "\x06" in name:
            raise InvalidInputError(field, f"queue name {name!r} contains whitespace or a control character")
    return cleaned


def validate_broker_url(url: str | None, field: str = "BROKER_URL") -> str:
    """A redis:// or rediss:// URL; TLS certificate checks may not be turned off."""
    if not url:
        raise InvalidInputError(field, "is required (redis://host:port/db or rediss://host:port/db)")
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise InvalidInputError(field, f"scheme must be redis or rediss, got {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise InvalidInputError(field, "has no host")
    query = {k.lower(): v for k, v in parse_qs(parts.query).items()}
    reqs = [v.lower() for v in query.get("ssl_cert_reqs", [])]
    if any(v in ("none", "cert_none", "optional", "cert_optional") for v in reqs):
        raise InvalidInputError(field, "ssl_cert_reqs must not disable certificate verification")
    hostname_checks = [v.lower() for v in query.get("ssl_check_hostname", [])]
    if any(v in ("false", "0", "no", "off") for v in hostname_checks):
        raise InvalidInputError(field, "ssl_check_hostname must not disable host name verification")
    return url
