"""Pending credit transactions of the old credit system (PostgreSQL)."""

from __future__ import annotations

from beatless.transactions.pending import (
    CHUNK_SIZE,
    InconsistentTransactions,
    PendingSettings,
    settle_stale_transactions,
)

__all__ = ["CHUNK_SIZE", "InconsistentTransactions", "PendingSettings", "settle_stale_transactions"]
