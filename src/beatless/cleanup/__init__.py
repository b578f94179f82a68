"""Cleanup jobs' cores (PostgreSQL): expired credit holds."""

from __future__ import annotations

from beatless.cleanup.reservations import CHUNK_SIZE, release_expired_holds

__all__ = ["CHUNK_SIZE", "release_expired_holds"]
