"""What one `beatless local` run started is stopped by process id — by the run itself on
Ctrl-C, or by the next run when this one was killed — and never a process that merely
reuses a listed pid."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beatless.local.processes import ProcessTable, alive, start_time


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)


def test_the_next_run_stops_what_a_killed_run_left_newest_first(tmp_path: Path) -> None:
    table = ProcessTable(tmp_path)
    broker, worker = sleeper(), sleeper()
    try:
        table.add("redis-server", broker.pid)
        table.add("local1", worker.pid)
        stopped = ProcessTable(tmp_path).stop_leftovers(grace=5)  # as the next run sees the file
        assert [e.name for e in stopped] == ["local1", "redis-server"]  # workers before their broker
        assert worker.wait(5) == -signal.SIGTERM and broker.wait(5) == -signal.SIGTERM
        assert table.entries() == []
    finally:
        for proc in (broker, worker):
            proc.kill()


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print('ready', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
        table = ProcessTable(tmp_path)
        table.add("graph-node-0", stubborn.pid)
        began = time.monotonic()
        table.stop_leftovers(grace=0.5)
        assert stubborn.wait(5) == -signal.SIGKILL
        assert time.monotonic() - began < 4
    finally:
        stubborn.kill()


def test_a_reused_pid_is_left_alone_and_a_stopped_process_is_forgotten(tmp_path: Path) -> None:
    bystander = sleeper()
    try:
        table = ProcessTable(tmp_path)
        started = start_time(bystander.pid)
        assert started is not None and alive(bystander.pid, started)
        # The same pid, listed with another start time: a process started after ours ended.
        (table.path).write_text(
            json.dumps([{"name": "moto-server", "pid": bystander.pid, "started": started - 1}])
        )
        assert table.stop_leftovers(grace=0.5) == []
        assert bystander.poll() is None  # still running
        assert not alive(bystander.pid, None)  # a start time not known is never taken for ours
        table.add("postgres", bystander.pid, signal.SIGINT)
        bystander.kill()
        bystander.wait(5)
        table.forget_stopped()
        assert table.entries() == []
    finally:
        bystander.kill()


def test_a_state_directory_is_made_by_beatless_local_locked_by_one_run_and_wiped_unless_resumed(
    tmp_path: Path,
) -> None:
    from beatless.errors import InvalidInputError
    from beatless.local.runner import prepare_state

    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    (home / "logs" / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInputError) as refused:
        prepare_state(home, resume=False)  # somebody's directory: nothing deleted in it
    assert refused.value.field == "--state-dir" and (home / "logs" / "keep.txt").read_text() == "mine"

    state_dir = tmp_path / "state"
    first = prepare_state(state_dir, resume=False)
    (state_dir / "redis").mkdir()
    (state_dir / "redis" / "appendonly.aof").write_text("queued")
    with pytest.raises(InvalidInputError, match="another `beatless local` runs"):
        prepare_state(state_dir, resume=True)  # the first run holds it
    first.lock.close()
    resumed = prepare_state(state_dir, resume=True)
    assert (state_dir / "redis" / "appendonly.aof").read_text() == "queued"  # kept for --resume
    resumed.lock.close()
    prepare_state(state_dir, resume=False).lock.close()
    assert not (state_dir / "redis").exists()  # a clean start
