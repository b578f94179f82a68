"""Errors of the credit API. Each names the argument that caused it (`field`)."""

from __future__ import annotations

from beatless.errors import InvalidInput


class UnknownAccount(InvalidInput):
    """No credit account with that id."""


class UnknownHold(InvalidInput):
    """No hold for that account and operation."""


class InsufficientCredits(InvalidInput):
    """The available balance (balance - held) is smaller than the amount asked for."""


class IdempotencyConflict(InvalidInput):
    """The key was used before for a different effect (another amount or account)."""


class HoldNotActive(InvalidInput):
    """The hold was released, or expired (or its expires_at has passed)."""
