"""`beatless invoke`: run any Lambda's handler here as the console's Test button does.

The function is any file of `bin/lambda/` (a registry job, `db_migrate`, `task_api`);
the event a file (default `events/<name>/minimal.json`) or JSON text; the context has
the function's own deadline (its registry timeout, or `FUNCTION_LIMITS`); a job gets the
environment defaults of its registry entry, as infra sets them, under this environment. The handler
runs in this process against this environment — the local endpoints when
`AWS_ENDPOINT_URL`, `DATABASE_URL`, `BROKER_URL` point at them. What it logs is caught
and printed after a START line and before END and REPORT lines (duration, memory size),
then the result, or, when the handler raised, the error as the console shows it
(`errorMessage`, `errorType`, `stackTrace`) — and the exit status is 1.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from beatless.errors import InvalidInputError
from beatless.jobs import FUNCTION_LIMITS, JOBS
from beatless.local.context import LocalContext
from beatless.local.handlers import CHECKOUT, entry_point_handler
from beatless.local.servers import environ

EVENTS = CHECKOUT / "events"
DEFAULT_EVENT = "minimal.json"


class _Capture(io.TextIOBase):
    """One stream for every invocation in this process, writing into the current one's buffer:
    a logger made on a first run keeps its stream (Powertools' does), so later runs' logs
    must reach the same object."""

    def __init__(self) -> None:
        self.current = io.StringIO()

    def write(self, text: str) -> int:
        return self.current.write(text)

    def writable(self) -> bool:
        return True


_CAPTURE = _Capture()
_HANDLERS: dict[str, Any] = {}  # loaded once per process: later invocations are warm, as in Lambda


@dataclass(frozen=True)
class Invocation:
    name: str
    event: Any
    result: Any
    error: dict[str, Any] | None
    logs: str
    duration_ms: float
    request_id: str

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def outcome(self) -> tuple[bool, Any]:
        """(ok, the result or the console's error): what the scheduler loop records of a run."""
        return self.ok, self.result if self.ok else self.error


def functions() -> dict[str, tuple[int, int]]:
    """Every Lambda of bin/lambda: name -> (memory MB, timeout seconds)."""
    found = {job.name: (job.memory_mb, job.timeout_seconds) for job in JOBS}
    found |= {name: (limits.memory_mb, limits.timeout_seconds) for name, limits in FUNCTION_LIMITS.items()}
    return found


def load_event(name: str, event_file: str | None, event_json: str | None) -> Any:
    if event_file is not None and event_json is not None:
        raise InvalidInputError("--event", "give --event or --event-json, not both")
    if event_json is not None:
        try:
            return json.loads(event_json)
        except ValueError as error:
            raise InvalidInputError("--event-json", f"is not JSON: {error}") from None
    path = Path(event_file) if event_file is not None else EVENTS / name / DEFAULT_EVENT
    if event_file is None and not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidInputError("--event", f"no file {path}") from None
    except ValueError as error:
        raise InvalidInputError("--event", f"{path} is not JSON: {error}") from None


def invoke(name: str, event: Any, env: Mapping[str, str | None] | None = None) -> Invocation:
    """Run `name`'s handler on `event` (see the module docstring); never raises for the handler.
    `env`: the function's environment over this process's, None unsetting a variable (default:
    a job's registry defaults, where this process sets nothing)."""
    known = functions()
    if name not in known:
        raise InvalidInputError("name", f"no Lambda {name!r}; one of {', '.join(sorted(known))}")
    memory_mb, timeout_seconds = known[name]
    context = LocalContext(name, memory_mb, timeout_seconds)
    if env is None:  # a job's registry defaults, as infra sets them on its function (this process's win)
        defaults = next((dict(job.environment) for job in JOBS if job.name == name), {})
        env = {k: v for k, v in defaults.items() if k not in os.environ}
    _CAPTURE.current = logs = io.StringIO()
    result, error = None, None
    start = time.perf_counter()
    with (
        environ(dict(env)),
        contextlib.redirect_stdout(_CAPTURE),
        contextlib.redirect_stderr(_CAPTURE),
    ):
        try:
            if name not in _HANDLERS:  # imported here: its loggers write to what is caught
                _HANDLERS[name] = entry_point_handler(name)
            result = _HANDLERS[name](event, context)
        except Exception as raised:
            error = {
                "errorMessage": str(raised),
                "errorType": type(raised).__name__,
                "stackTrace": traceback.format_tb(raised.__traceback__),
            }
    duration = (time.perf_counter() - start) * 1000
    return Invocation(name, event, result, error, logs.getvalue(), duration, context.aws_request_id)


def report(invocation: Invocation, out: TextIO = sys.stdout) -> None:
    print(f"START RequestId: {invocation.request_id}", file=out)
    if invocation.logs.strip():
        print(invocation.logs.rstrip("\n"), file=out)
    print(f"END RequestId: {invocation.request_id}", file=out)
    memory = functions()[invocation.name][0]
    print(
        f"REPORT RequestId: {invocation.request_id}\tDuration: {invocation.duration_ms:.2f} ms\t"
        f"Memory Size: {memory} MB",
        file=out,
    )
    shown = invocation.error if invocation.error is not None else invocation.result
    print(json.dumps(shown, indent=2, default=str), file=out)
