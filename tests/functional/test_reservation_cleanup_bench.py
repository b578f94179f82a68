"""bench/reservation_cleanup.py keeps working: at a small N every method leaves the
database right (no timing is asserted; the figures come from the full N)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_benchmark_runs_and_every_method_checks_out() -> None:
    command = [
        sys.executable, str(REPO / "bench" / "reservation_cleanup.py"),
        "--reservations", "20000", "--expired", "4000", "--accounts", "500",
        "--loop-sample", "200", "--shared-buffers", "128MB",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if " MB  " in line}
    assert set(rows) == {"job", "loop", "naive", "plain", "bare"}
    assert all(" ok: " in row for row in rows.values())
    assert "job: " in done.stdout and "releases/s" in done.stdout
