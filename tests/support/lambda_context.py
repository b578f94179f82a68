"""The one fake of the Lambda context: what Beatless' handlers use of it.

A real Lambda passes an object with these attributes; `remaining_ms` drops by
`shrink_ms` on every call to `get_remaining_time_in_millis`, so out-of-time
behaviour is testable without waiting.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeLambdaContext:
    """The parts of the Lambda context Beatless uses. `remaining_ms` drops by
    `shrink_ms` on every call to `get_remaining_time_in_millis`."""

    remaining_ms: int = 300_000
    shrink_ms: int = 0
    function_name: str = "beatless-job"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:111122223333:function:beatless-job"
    aws_request_id: str = "00000000-0000-4000-8000-000000000000"
    calls: int = 0

    def get_remaining_time_in_millis(self) -> int:
        self.calls += 1
        value = self.remaining_ms
        self.remaining_ms = max(0, self.remaining_ms - self.shrink_ms)
        return value
