"""The worker_monitor Lambda stays light: no Celery, kombu or pydantic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("celery", "kombu", "pydantic", "aws_cdk")


def test_worker_monitor_imports_nothing_heavy() -> None:
    probe = (
        "import json, sys; import worker_monitor; "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env={"PYTHONPATH": f"{REPO / 'src'}:{REPO / 'bin' / 'lambda'}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(result.stdout) == []
