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
# Not on the Lambda path: the local runner and the CLI (not in the bundle), the worker's core,
# the graph node service (LadybugDB), the heavy operations (worker only: pydantic, the graph engine
# and DuckDB may be theirs).
OFF_THE_LAMBDA_PATH = (
    "beatless.cost",  # `beatless cost`: a report, run by operators
    "beatless.api",  # the task API's Lambda: its own bundle and cold-start budget (pydantic)
    "beatless.local",
    "beatless.cli",
    "beatless.workers",
    "beatless.graphs.node",
    "beatless.operations",
    "beatless.graphs.operations",
    "beatless.graphs.params",
    "beatless.ingestion.operations",
    "beatless.ingestion.params",
    "beatless.ingestion.sample",
    "beatless.ingestion.validation",
    "beatless.analytics",
)


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
    modules = {
        ".".join(("beatless", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        for path in PACKAGE.rglob("*.py")
    }
    checked = tuple(contracts()["lambda-path"]["source_modules"])  # type: ignore[call-overload]

    def within(module: str, prefixes: tuple[str, ...]) -> bool:
        return any(module == p or module.startswith(p + ".") for p in prefixes)

    packages = {"beatless", "beatless.graphs", "beatless.ingestion"}  # their own __init__ imports nothing
    unclassified = sorted(m for m in modules - packages if not within(m, checked + OFF_THE_LAMBDA_PATH))
    assert unclassified == []
    assert not [m for m in checked if within(m, OFF_THE_LAMBDA_PATH)]
