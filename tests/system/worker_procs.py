"""Real Beatless worker processes for tests: started the normal way
(``celery -A worker.app worker``), stopped by PID, output kept in files.

Each worker runs in its own session (process group) so that a test that
fails half-way still ends the worker and its pool processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from beatless.workers.settings import WorkerSettings
from worker.app import BeatlessCelery, create_app

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")

# Short intervals so that protection tests see renewals within seconds.
FAST_ENV = {
    "WORKER_STOP_TIMEOUT_SECONDS": "10",
    "WORKER_SOFT_SHUTDOWN_SECONDS": "1",
    "WORKER_BUSY_POLL_SECONDS": "0.1",
}


def worker_env(broker_url: str, **overrides: str) -> dict[str, str]:
    """The environment of a worker process (and of `producer`), as the task definition sets it."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ECS_", "TASK_PROTECTION_", "WORKER_", "BROKER_", "RESULT_BACKEND", "REMAP_"))
    }
    env.update(
        {
            "BROKER_URL": broker_url,
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")]),
            "PYTHONUNBUFFERED": "1",
            **FAST_ENV,
        }
    )
    env.update(overrides)
    return env


def producer(env: Mapping[str, str]) -> BeatlessCelery:
    """An app configured like the worker, to send tasks and read results."""
    return create_app(WorkerSettings.from_env(env))


def wait_for(what: str, check: Callable[[], T], timeout: float = 30.0, interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class WorkerProcess:
    def __init__(self, name: str, env: Mapping[str, str], workdir: Path, *extra_args: str) -> None:
        self.name = name
        self.nodename = f"{name}@{socket.gethostname()}"
        self.env = dict(env)
        self.workdir = workdir
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        self.args = [
            sys.executable, "-m", "celery", "-A", "worker.app", "worker",
            "-n", f"{name}@%h", "-l", "INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            *extra_args,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True) -> WorkerProcess:
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(
                self.args, cwd=REPO, env=self.env, stdout=out, stderr=err, start_new_session=True
            )
        if wait_ready:
            wait_for(f"worker {self.name} to be ready", self._ready, timeout=30)
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.stderr()}")
        return f"{self.nodename} ready." in self.stderr()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def emf(self) -> list[dict[str, Any]]:
        """The EMF metric lines the worker wrote to stdout."""
        records = []
        for line in self.stdout().splitlines():
            if line.startswith("{") and '"_aws"' in line:
                records.append(json.loads(line))
        return records

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL for the whole process group if it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # Celery dumps every thread's stack on SIGUSR1: the log then shows where it hung.
                self.proc.send_signal(signal.SIGUSR1)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        return self.proc.returncode


@contextlib.contextmanager
def running_worker(
    name: str, env: Mapping[str, str], workdir: Path, *extra_args: str
) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(name, env, workdir, *extra_args)
    try:
        yield worker.start()
    finally:
        worker.stop()
