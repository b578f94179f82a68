"""Exact credit amounts: integers of micro-credits.

1 credit = 1,000,000 micro-credits. The database stores BIGINT micro-credits
(columns ending in `_micro`); Python code passes `int`. Conversions to and from
`Decimal` are exact and refuse anything finer than a micro-credit; floats are
refused everywhere (0.1 + 0.2 != 0.3).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from beatless.errors import InvalidInputError

MICRO_PER_CREDIT = 1_000_000
MAX_MICRO = 2**63 - 1  # BIGINT


def micro(field: str, value: Any, *, minimum: int = 1) -> int:
    """`value` as a micro-credit amount >= `minimum`, or `InvalidInputError` naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(
            field, f"must be an integer number of micro-credits, got {type(value).__name__}"
        )
    if value < minimum:
        raise InvalidInputError(field, f"must be at least {minimum}, got {value}")
    if value > MAX_MICRO:
        raise InvalidInputError(field, f"must fit a BIGINT, got {value}")
    return value


def to_micro(credits: int | str | Decimal, field: str = "credits") -> int:
    """Credits (an int, a decimal string or a Decimal) as micro-credits, exactly."""
    if isinstance(credits, (bool, float)):
        raise InvalidInputError(field, f"must be an int, a decimal string or a Decimal, got {credits!r}")
    try:
        value = Decimal(credits) if not isinstance(credits, Decimal) else credits
    except InvalidOperation:
        raise InvalidInputError(field, f"is not a decimal number: {credits!r}") from None
    if not value.is_finite():
        raise InvalidInputError(field, f"must be finite, got {credits!r}")
    scaled = value * MICRO_PER_CREDIT
    if scaled != scaled.to_integral_value():
        raise InvalidInputError(field, f"has more precision than one micro-credit: {credits!r}")
    return int(scaled)


def to_credits(amount_micro: int) -> Decimal:
    """Micro-credits as an exact Decimal number of credits."""
    return Decimal(amount_micro).scaleb(-6)
