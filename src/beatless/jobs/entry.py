"""What every scheduled Lambda's entry point is, written once.

`bin/lambda/<job>.py` is its docstring (trigger, schedule, side effects,
idempotency) and one statement::

    handler = JobHandler("auth_cleanup", lambda env: partial(clean_up_auth, settings=Settings.from_env(env)))

`JobHandler` is the function Lambda calls: a Powertools logger named after
the job (with the Lambda context in every line), the job's settings built from
`os.environ` on each invocation by `work_for` — the edge, the only place the
environment is read — and one `run_job` with the process's resources
(`beatless.jobs.resources.environment_resources`). The handler carries its
registry entry (`.job`), logger (`.logger`) and event options (`.options`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools import Logger

from beatless.events import Option
from beatless.jobs.registry import Job, job
from beatless.jobs.resources import environment_resources
from beatless.jobs.runtime import JobContext, JobOutcome, run_job
from beatless.settings import Env

Work = Callable[[JobContext], JobOutcome]


class JobHandler:
    """The Lambda handler of the registry job `name`; `work_for(env)` builds its work."""

    def __init__(
        self,
        name: str,
        work_for: Callable[[Env], Work],
        *,
        options: Mapping[str, Option] | None = None,
        translate: Callable[[Any], Any] | None = None,
    ) -> None:
        self.job: Job = job(name)
        self._translate = translate  # events of the job's EventBridge rules -> its own event
        self.logger = Logger(service=name)
        self.options = options
        self._work_for = work_for
        self._handle: Callable[[Any, Any], dict[str, Any]] = self.logger.inject_lambda_context(self._run)

    def __call__(self, event: Any, context: Any) -> dict[str, Any]:
        return self._handle(event, context)

    def _run(self, event: Any, context: Any) -> dict[str, Any]:
        env = os.environ
        return run_job(
            self.job,
            self._translate(event) if self._translate is not None else event,
            context,
            self._work_for(env),
            resources=environment_resources(env),
            options=self.options,
            logger=self.logger,
        )
