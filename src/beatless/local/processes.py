"""The processes one `beatless local` run started, by process id, in its state directory.

Every server and worker the run starts is written to `pids.json` (name, pid, and the
process's start time, so a recycled pid is never taken for ours) and removed when the
run stops it. A run that ended cleanly leaves the file empty; one that was killed
(SIGKILL, a closed terminal) leaves its processes listed, and the next run stops them
— by those ids, newest first — before it starts anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

FILE = "pids.json"


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None: no such process)."""
    try:
        return int(_stat(pid)[19])  # field 22 of /proc/<pid>/stat
    except OSError:
        return None


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat's fields after the command name (which may hold spaces, in parentheses)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def alive(pid: int, started: int | None) -> bool:
    """`pid` is still the process that started at `started` (unknown start: never taken for ours)."""
    now = start_time(pid)
    if now is None or started is None or now != started:
        return False  # gone, or the pid was reused by another process
    with contextlib.suppress(OSError):
        return _stat(pid)[0] != "Z"  # a zombie has exited
    return False


@dataclass(frozen=True)
class Entry:
    name: str
    pid: int
    started: int | None
    stop_signal: int = signal.SIGTERM  # PostgreSQL: SIGINT, its fast shutdown


class ProcessTable:
    """`pids.json` in `directory`: what this run started and has not stopped yet."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE
        self._lock = threading.Lock()

    def entries(self) -> list[Entry]:
        if not self.path.exists():
            return []
        return [Entry(**item) for item in json.loads(self.path.read_text() or "[]")]

    def _write(self, entries: list[Entry]) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps([e.__dict__ for e in entries], indent=1))
        temporary.replace(self.path)

    def add(self, name: str, pid: int, stop_signal: int = signal.SIGTERM) -> None:
        with self._lock:
            self._write([*self.entries(), Entry(name, pid, start_time(pid), int(stop_signal))])

    def remove(self, pid: int) -> None:
        with self._lock:
            self._write([e for e in self.entries() if e.pid != pid])

    def forget_stopped(self) -> None:
        """Drop the entries of processes that are gone (all of them after a clean stop)."""
        with self._lock:
            self._write([e for e in self.entries() if alive(e.pid, e.started)])

    def stop_leftovers(self, grace: float = 15.0) -> list[Entry]:
        """Stop what an earlier run left running (newest first: workers before their broker);
        the entries that were still alive."""
        with self._lock:
            leftovers = [e for e in reversed(self.entries()) if alive(e.pid, e.started)]
            for entry in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(entry.pid, entry.stop_signal)
                deadline = time.monotonic() + grace
                while alive(entry.pid, entry.started) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if alive(entry.pid, entry.started):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(entry.pid, signal.SIGKILL)
            self._write([])
            return leftovers
