"""The graph plane's and the heavy operations' benchmarks keep working: at a small N each
runs to the end and every check it makes of its own results holds (no timing is asserted;
the figures come from the full N, README "Performance")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "command",
    [
        ["graph_bulk_load.py", "--smoke"],
        ["graph_backup.py", "--smoke"],
        ["graph_health_check.py", "--instances", "20"],
        ["ingestion.py", "--smoke"],
        ["communities.py", "--smoke"],
        ["progress_latency.py", "--smoke"],
        ["task_api.py", "--smoke"],
        ["local_scaling.py", "--smoke"],
    ],
    ids=lambda c: c[0].removesuffix(".py"),
)
def test_the_benchmark_runs_and_its_checks_hold(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / command[0]), *command[1:]],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    # Each verifies its own results (counts, checksums, query answers, registry states).
    assert "WRONG" not in done.stdout and " ok" in done.stdout, done.stdout[-4000:]
