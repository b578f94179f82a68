"""Ctrl-C during `beatless local`: every process the run started is stopped by its pid and
the live view's last frame is left on the screen; the state is kept, and `--resume`
carries on with the queued burst — every task applied exactly once over both runs."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from beatless.errors import InvalidInputError
from beatless.local.processes import alive
from beatless.local.runner import EFFECTS_APPLIED_KEY, LocalOptions, run

ROOT = Path(__file__).resolve().parents[2]
TASKS = 30
QUICK = ["--graph-nodes", "0", "--no-demo", "--schedule-speed", "0", "--no-api", "--sample-interval", "1"]


def redis_port(pid: int) -> int:
    found = re.search(rb"127\.0\.0\.1:(\d+)", Path(f"/proc/{pid}/cmdline").read_bytes())
    assert found, "redis-server's command line names its port"
    return int(found.group(1))


def wait_for(condition, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout} s")


def test_ctrl_c_stops_everything_by_pid_and_resume_finishes_the_burst(tmp_path: Path) -> None:
    state = tmp_path / "state"
    command = [sys.executable, "-m", "beatless.cli", "local", "--state-dir", str(state), "--view", "live",
               "--tasks", str(TASKS), "--steps", "3", "--step-seconds", "0.3", "--max-workers", "2",
               *QUICK]  # fmt: skip
    runner = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "160"},
    )
    try:
        table = state / "pids.json"
        listed = wait_for(
            lambda: [e for e in json.loads(table.read_text() or "[]") if e["name"].startswith("local")]
            if table.exists() else None,
            120, "a worker started",
        )  # fmt: skip
        entries = json.loads(table.read_text())
        broker_pid = next(e["pid"] for e in entries if e["name"] == "redis-server")
        client = redis.Redis(port=redis_port(broker_pid))
        wait_for(lambda: client.hlen(EFFECTS_APPLIED_KEY) >= 3, 60, "three tasks applied")
        entries = json.loads(table.read_text())
        runner.send_signal(signal.SIGINT)  # what Ctrl-C sends
        output, _ = runner.communicate(timeout=90)
    finally:
        runner.kill()
    text = output.decode()
    assert runner.returncode == 130, text
    assert listed and {"redis-server", "moto-server"} <= {e["name"] for e in entries}
    for entry in entries:  # every process it had started is gone
        assert not alive(entry["pid"], entry["started"]), (entry, text)
    assert json.loads(table.read_text()) == []
    assert "interrupted: every process this run started was stopped by its pid" in text
    # The live view's last frame, as drawn at the interrupt.
    assert "queues" in text and re.search(r"workers: \d running, \d busy", text), text
    assert (state / "beatless-local.png").read_bytes()[:4] == b"\x89PNG"

    out = io.StringIO()
    report = run(
        LocalOptions(tasks=TASKS, steps=3, step_seconds=0.3, sample_interval_seconds=1.0, max_workers=2,
                     graph_nodes=0, demo=False, schedule_speed=0, task_api=False, wait_for_scale_in=False,
                     timeout_seconds=180, state_dir=state, resume=True),
        out=out,
    )  # fmt: skip
    resumed = out.getvalue()
    said = re.search(r"resuming: \d+ tasks were sent by the earlier run, (\d+) applied", resumed)
    assert said, resumed
    applied_before = int(said[1])
    assert 3 <= applied_before < TASKS, resumed  # some were done, some were still queued
    assert report.ok and report.resumed, resumed
    assert report.applied == TASKS and report.total == TASKS  # nothing lost, nothing applied twice
    assert json.loads(table.read_text()) == []


def test_resume_needs_an_earlier_run(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as refused:
        LocalOptions(state_dir=tmp_path / "never-ran", resume=True)
    assert refused.value.field == "--resume"
