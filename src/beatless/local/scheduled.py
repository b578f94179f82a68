"""The scheduled jobs and the task API inside `beatless local`.

`ScheduledJobs` runs the scheduler loop (`beatless.local.scheduler`) on its own thread
over a window of simulated time — by default the last hour, replayed at 60x, so every
run is for a past time and acts on it as a deployed one would — invoking the real
handlers (`beatless.local.invoke`) each with its environment here
(`beatless.local.needs.job_environment`). It prints each run and keeps, per schedule,
the runs, failures and durations. `worker_monitor` is left out: the local runner is the
monitor, sampling on a finer grid than the Lambda's minute.

`start_task_api` serves the task API on a free loopback port for the run, with a fresh
token, and prints how to point `beatless tasks` at it.
"""

from __future__ import annotations

import contextlib
import secrets
import statistics
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from beatless.jobs import JOBS, Job
from beatless.local.needs import LocalSystem, job_environment
from beatless.local.scheduler import Run, SchedulerLoop, SimulatedClock
from beatless.local.view import JobLine

LEFT_OUT = ("worker_monitor",)  # the runner itself is the monitor


@dataclass
class ScheduleReport:
    runs: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    durations_ms: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, set[str]] = field(default_factory=dict)  # the custom metrics each job published
    last: dict[str, tuple[datetime, str]] = field(default_factory=dict)  # per job: when, and how it ended
    failures: dict[str, int] = field(default_factory=dict)
    finished: bool = False

    @property
    def ok(self) -> bool:
        return self.finished and not self.failed and bool(self.runs)

    def median_ms(self) -> dict[str, float]:
        return {name: round(statistics.median(ms), 1) for name, ms in sorted(self.durations_ms.items())}

    def as_dict(self) -> dict[str, Any]:
        return {
            "scheduled_runs": dict(sorted(self.runs.items())),
            "scheduled_failures": self.failed[:20],
            "scheduled_median_ms": self.median_ms(),
            "scheduled_metrics_per_job": {name: len(found) for name, found in sorted(self.metrics.items())},
            "scheduled_ok": self.ok,
        }


class ScheduledJobs:
    def __init__(
        self,
        system: LocalSystem,
        out: TextIO,
        *,
        speed: float,
        window: timedelta,
        jobs: tuple[Job, ...] = JOBS,
    ) -> None:
        from beatless.local.invoke import invoke

        self.system, self.out = system, out
        self.jobs = tuple(job for job in jobs if job.name not in LEFT_OUT)
        self.environments = {job.name: job_environment(job, system) for job in self.jobs}
        self.end = datetime.now(UTC).replace(second=0, microsecond=0)
        self.clock = SimulatedClock(self.end - window, speed)
        self.report = ScheduleReport()
        self._next_due: dict[str, datetime | None] = {}
        self.stop = threading.Event()
        self._invoke = invoke
        self.loop = SchedulerLoop(self.jobs, self._fire, self.clock)
        self.thread = threading.Thread(target=self._run, name="scheduled-jobs", daemon=True)

    def _fire(self, name: str, event: dict[str, Any]) -> tuple[bool, Any]:
        done = self._invoke(name, event, self.environments[name])
        self.report.metrics.setdefault(name, set()).update(emf_metrics(done.logs))
        return done.outcome

    def _show(self, run: Run) -> None:
        label = f"{run.fire.job}:{run.fire.label}" if run.fire.label else run.fire.job
        report = self.report
        report.runs[label] = report.runs.get(label, 0) + 1
        report.durations_ms.setdefault(run.fire.job, []).append(run.seconds * 1000)
        verdict = "ok"
        if not run.ok:
            error = run.result if isinstance(run.result, dict) else {}
            verdict = f"FAILED {error.get('errorType')}: {str(error.get('errorMessage'))[:200]}"
            report.failed.append(f"{label} at {run.fire.at:%H:%M}: {verdict}")
            report.failures[run.fire.job] = report.failures.get(run.fire.job, 0) + 1
        report.last[run.fire.job] = (run.fire.at, f"{verdict[:60]} {run.seconds * 1000:.0f} ms")
        print(f"  [jobs] {run.fire.at:%H:%M} {label:<36} {run.seconds * 1000:6.0f} ms {verdict}",
              file=self.out, flush=True)  # fmt: skip

    def status(self) -> tuple[JobLine, ...]:
        """Each job's runs, last result and next due time (simulated), for the live view."""
        now = min(self.clock.now(), self.end)
        lines = []
        for job in self.jobs:
            due = self._next_due.get(job.name)
            if job.name not in self._next_due or (due is not None and due <= now):
                due = self._next_due[job.name] = self.loop.next_fire_of(job.name, now)
            last_at, last = self.report.last.get(job.name, (None, None))
            runs = len(self.report.durations_ms.get(job.name, ()))
            lines.append(JobLine(job.name, runs, self.report.failures.get(job.name, 0), last, last_at, due))
        return tuple(lines)

    def _run(self) -> None:
        try:
            self.loop.run(self.end, stop=self.stop, on_run=self._show)
            self.report.finished = not self.stop.is_set()
        except Exception as error:  # the report says it; the run's exit status follows
            self.report.failed.append(f"the scheduler loop stopped: {type(error).__name__}: {error}")

    def start(self) -> ScheduledJobs:
        print(
            f"firing {len(self.jobs)} registry jobs on their schedules over {self.clock.start:%H:%M}-"
            f"{self.end:%H:%M} UTC at {self.clock.speed:g}x (real handlers; worker_monitor: this runner)",
            file=self.out,
            flush=True,
        )
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


def emf_metrics(logs: str) -> set[str]:
    """The custom metrics the EMF lines of `logs` publish: namespace, name and dimension values
    (each distinct one is a metric CloudWatch bills)."""
    import json

    found = set()
    for line in logs.splitlines():
        if not (line.startswith("{") and '"_aws"' in line):
            continue
        document = json.loads(line)
        for block in document["_aws"]["CloudWatchMetrics"]:
            for dimensions in block.get("Dimensions") or [[]]:
                where = ",".join(f"{d}={document.get(d)}" for d in dimensions)
                found |= {f"{block['Namespace']}/{m['Name']}[{where}]" for m in block["Metrics"]}
    return found


def start_task_api(stack: contextlib.ExitStack, env: dict[str, str], out: TextIO) -> Any:
    """The task API on a free loopback port until `stack` closes."""
    from beatless.api.app import TaskHttpApp
    from beatless.api.environment import task_api
    from beatless.local.api_server import TaskApiServer

    api = task_api(env)
    token = secrets.token_urlsafe(24)
    server = stack.enter_context(TaskApiServer(TaskHttpApp(lambda: api), lambda: api, token))
    stack.callback(api.resources.close)
    print(f"task API on {server.url}: export BEATLESS_API_URL={server.url} BEATLESS_API_TOKEN={token}",
          file=out, flush=True)  # fmt: skip
    return server
