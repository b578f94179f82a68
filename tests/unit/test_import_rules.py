"""The import rules of pyproject.toml ([tool.importlinter]) hold, and they cover what
they are meant to: every registry job's core, every module the Lambda bundle ships."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from beatless.jobs import JOBS

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "beatless"
# Not on the Lambda path: the local runner and the CLI (not in the bundle), the worker's core.
OFF_THE_LAMBDA_PATH = {"beatless.local", "beatless.cli", "beatless.workers"}


def contracts() -> dict[str, dict[str, object]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {contract["id"]: contract for contract in config["contracts"]}


def test_the_import_rules_hold() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_every_job_core_is_kept_apart_from_the_others() -> None:
    assert sorted(contracts()["job-cores"]["modules"]) == sorted({job.core for job in JOBS})  # type: ignore[call-overload]


def test_every_shipped_module_is_on_the_checked_lambda_path() -> None:
    top_level = {
        f"beatless.{path.stem if path.is_file() else path.name}"
        for path in PACKAGE.iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").is_file()
    }
    checked = set(contracts()["lambda-path"]["source_modules"])  # type: ignore[call-overload]
    assert checked == top_level - OFF_THE_LAMBDA_PATH
