"""A Lambda context for running a handler on this machine (`beatless job`, the local runner).

It carries what Beatless' handlers read of a real one, and a real deadline:
the job's registry timeout, counted from when the context was made.
"""

from __future__ import annotations

import time

from beatless.jobs.registry import Job


class LocalContext:
    def __init__(self, job: Job) -> None:
        self.function_name = f"beatless-{job.name}"
        self.memory_limit_in_mb = job.memory_mb
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{self.function_name}"
        self.aws_request_id = "local"
        self._deadline = time.monotonic() + job.timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
