"""Errors of the credit API. Each names the argument that caused it (`field`)."""

from __future__ import annotations

from beatless.errors import InvalidInputError


class UnknownAccountError(InvalidInputError):
    """No credit account with that id."""


class UnknownHoldError(InvalidInputError):
    """No hold for that account and operation."""


class InsufficientCreditsError(InvalidInputError):
    """The available balance (balance - held) is smaller than the amount asked for."""


class IdempotencyConflictError(InvalidInputError):
    """The key was used before for a different effect (another amount or account)."""


class HoldNotActiveError(InvalidInputError):
    """The hold was released, or expired (or its expires_at has passed)."""


# The names before exceptions were named ...Error (the documented domain API); kept so
# callers' imports keep working.
UnknownAccount = UnknownAccountError
UnknownHold = UnknownHoldError
InsufficientCredits = InsufficientCreditsError
IdempotencyConflict = IdempotencyConflictError
HoldNotActive = HoldNotActiveError
