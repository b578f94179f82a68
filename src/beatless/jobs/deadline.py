"""How long a run may keep starting work: the Lambda's remaining time minus a margin."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

UNLIMITED_MS = 10**12  # no Lambda context (a local run): effectively no deadline


class Deadline:
    """`remaining_ms()` is the time left before the margin; `allows(ms)` says whether a
    step expected to take `ms` still fits. The Lambda context is asked every time
    (its clock is the truth); `clock` times the steps (injectable for tests)."""

    def __init__(
        self,
        remaining_ms: Callable[[], int],
        margin_ms: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._remaining = remaining_ms
        self.margin_ms = margin_ms
        self.clock = clock

    @classmethod
    def from_context(
        cls, context: Any, margin_ms: int, clock: Callable[[], float] = time.monotonic
    ) -> Deadline:
        getter = getattr(context, "get_remaining_time_in_millis", None)
        if getter is None:
            return cls(lambda: UNLIMITED_MS, margin_ms, clock)
        return cls(lambda: int(getter()), margin_ms, clock)

    def remaining_ms(self) -> int:
        return self._remaining() - self.margin_ms

    def allows(self, step_ms: float) -> bool:
        return self.remaining_ms() >= step_ms
