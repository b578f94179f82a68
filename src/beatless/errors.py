"""Errors shared by every entry point.

A bad input raises `InvalidInputError` naming the offending field; callers never
catch it to carry on, so a malformed event changes nothing and fails loudly.
"""

from __future__ import annotations


class BeatlessError(Exception):
    """Base class of every error Beatless raises on purpose."""


class InvalidInputError(BeatlessError, ValueError):
    """An event, environment variable or argument is malformed.

    `field` is the dotted path of the offending key (for example
    ``"dry_run"`` or ``"BROKER_TRANSPORT_OPTIONS.priority_steps"``).
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class ConfigurationError(BeatlessError):
    """A combination of settings that would make the system unsafe to run."""


# The name before exceptions were named ...Error; kept so callers' imports keep working.
InvalidInput = InvalidInputError
