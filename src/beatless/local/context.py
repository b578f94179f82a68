"""A Lambda context for running a handler on this machine (`beatless job`, the local runner,
the local task API server).

It carries what Beatless' handlers read of a real one, and a real deadline: the
function's timeout, counted from when the context was made.
"""

from __future__ import annotations

import time
import uuid

from beatless.jobs.registry import Job


class LocalContext:
    def __init__(self, name: str, memory_mb: int, timeout_seconds: float) -> None:
        self.function_name = f"beatless-{name}"
        self.memory_limit_in_mb = memory_mb
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{self.function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + timeout_seconds

    @classmethod
    def for_job(cls, job: Job) -> LocalContext:
        return cls(job.name, job.memory_mb, job.timeout_seconds)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
