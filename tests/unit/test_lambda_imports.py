"""Every Lambda entry point stays light: imported in a fresh interpreter, as a cold
start does, it loads no Celery, kombu, pydantic, CDK, DuckDB or graph engine, and no
local-runner or CLI code (which the bundle does not ship). The task API alone loads
pydantic (its request and answer models) — and nothing else of that list."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from beatless.jobs import API_FUNCTIONS

REPO = Path(__file__).resolve().parents[2]
ENTRY_POINTS = sorted((REPO / "bin" / "lambda").glob("*.py"))
HEAVY = ("celery", "kombu", "billiard", "pydantic", "aws_cdk", "duckdb", "ladybug", "kuzu")
NOT_SHIPPED = ("beatless.local", "beatless.cli")


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=lambda p: p.stem)
def test_an_entry_point_imports_nothing_heavy(entry: Path) -> None:
    probe = f"import json, sys; import {entry.stem}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env={"PYTHONPATH": f"{REPO / 'src'}:{REPO / 'bin' / 'lambda'}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = json.loads(result.stdout)
    allowed = {"pydantic"} if entry.stem in API_FUNCTIONS else set()
    assert sorted({m.split(".")[0] for m in loaded} & set(HEAVY) - allowed) == []
    assert [m for m in loaded if m.startswith(NOT_SHIPPED)] == []
