"""ruff and mypy, configured in pyproject.toml, stay clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHECKED = ["src", "bin", "worker", "infra", "tests", "bench", "scripts"]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    existing = [p for p in CHECKED if (REPO / p).exists()]
    return subprocess.run([*args, *existing], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_ruff_lint_clean() -> None:
    result = _run([str(BIN / "ruff"), "check", "--no-cache"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_clean() -> None:
    result = _run([str(BIN / "ruff"), "format", "--check", "--no-cache"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_clean(mypy_run: subprocess.Popen[str]) -> None:
    # The configuration lives in pyproject.toml ([tool.mypy]); strict for the typed
    # boundaries. The run started when the tests were collected (tests/conftest.py).
    output, _ = mypy_run.communicate(timeout=900)
    assert mypy_run.returncode == 0, output
