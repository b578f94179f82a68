"""The one Lambda asset: built without Docker, handlers and `beatless` at the
zip root (without the local runner and the CLI), dependencies for CPython 3.12
manylinux x86_64."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from beatless.errors import ConfigurationError
from beatless.jobs import API_FUNCTIONS, DEPLOY_FUNCTIONS, JOBS
from infra.components.lambda_bundle import EXCLUDED, LambdaBundle, package_files
from infra.config import LambdaSource

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]


def _asset_dir(synth: Any) -> Path:
    manifest = json.loads((synth.outdir / f"{synth.stacks.jobs.stack_name}.assets.json").read_text())
    # The stack's own template is a file asset too, and the custom-resource framework
    # brings its own code; ours is the zip holding the beatless package.
    zips = [
        Path(synth.outdir / a["source"]["path"])
        for a in manifest["files"].values()
        if a["source"].get("packaging") == "zip"
    ]
    (asset,) = [z for z in zips if (z / "beatless").is_dir()]
    return asset


def test_all_functions_share_one_asset(synth: Any) -> None:
    functions = synth.resources("AWS::Lambda::Function").values()
    ours = [f for f in functions if f["Runtime"] == "python3.12"]
    assert {f["Handler"] for f in ours} == {
        *(f"{job.name}.handler" for job in synth.config.jobs),
        "db_migrate.handler",
        *(f"{name}.handler" for name in API_FUNCTIONS),
    }
    assert len({json.dumps(f["Code"], sort_keys=True) for f in ours}) == 1
    # The only other function is CDK's custom-resource framework (Node.js) for the migration.
    (framework,) = [f for f in functions if f["Runtime"] != "python3.12"]
    assert framework["Handler"] == "framework.onEvent"


def test_asset_holds_handlers_beatless_and_cp312_manylinux_dependencies(synth: Any) -> None:
    asset = _asset_dir(synth)
    for name in [job.name for job in JOBS] + list(DEPLOY_FUNCTIONS) + list(API_FUNCTIONS):
        assert (asset / f"{name}.py").is_file()
    assert (asset / "beatless" / "__init__.py").is_file()
    assert (asset / "beatless" / "jobs" / "registry.py").read_bytes() == (
        REPO_ROOT / "src" / "beatless" / "jobs" / "registry.py"
    ).read_bytes()
    for package in ("aws_lambda_powertools", "redis", "boto3", "psycopg", "pydantic", "pydantic_core"):
        assert (asset / package).is_dir(), package
    # Compiled extensions, if any, are for CPython 3.12 on Linux x86_64 only.
    for extension in asset.rglob("*.so"):
        assert "cpython-312-x86_64-linux-gnu" in extension.name or "abi3" in extension.name, extension
    # Nothing the Lambda must not carry.
    assert not (asset / "bin").exists()
    assert not (asset / ".lock").exists()
    assert not list(asset.rglob("__pycache__"))
    for heavy in ("celery", "kombu", "aws_cdk", "moto"):
        assert not (asset / heavy).exists(), heavy


PACKAGE_DIR = REPO_ROOT / "src" / "beatless"


def test_asset_holds_no_local_runner_or_cli_but_every_entry_point_and_the_runtime(synth: Any) -> None:
    asset = _asset_dir(synth)
    assert (PACKAGE_DIR / "local").is_dir() and (PACKAGE_DIR / "cli.py").is_file()  # they do exist in src
    assert not (asset / "beatless" / "local").exists()
    assert not (asset / "beatless" / "cli.py").exists()
    assert not (asset / "beatless" / "graphs" / "node").exists()  # the graph node runs on EC2
    assert (asset / "beatless" / "graphs" / "monitor.py").is_file()  # kuzu_instance_monitor's core
    for entry_point in sorted((REPO_ROOT / "bin" / "lambda").glob("*.py")):
        assert (asset / entry_point.name).read_bytes() == entry_point.read_bytes(), entry_point.name
    assert (asset / "beatless" / "jobs" / "runtime.py").read_bytes() == (
        PACKAGE_DIR / "jobs" / "runtime.py"
    ).read_bytes()
    # Exactly the package's files minus the excluded ones (and no bytecode).
    bundled = {p.relative_to(asset / "beatless") for p in (asset / "beatless").rglob("*") if p.is_file()}
    assert bundled == {p.relative_to(PACKAGE_DIR) for p in package_files(PACKAGE_DIR)}
    assert not [p for p in bundled if any(p.is_relative_to(excluded) for excluded in EXCLUDED)]


def _imported_modules(root: Path, path: Path) -> set[str]:
    """Every module an `import` / `from ... import` in `path` names (relative ones resolved
    against its package, `root` being the import root)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_nothing_in_the_asset_imports_the_local_runner_or_the_cli(synth: Any) -> None:
    asset = _asset_dir(synth)
    modules = [*(asset / "beatless").rglob("*.py"), *asset.glob("*.py")]
    forbidden = ("beatless.local", "beatless.cli")
    offenders = {
        str(path.relative_to(asset)): names
        for path in modules
        if (
            names := sorted(
                m
                for m in _imported_modules(asset, path)
                if m in forbidden or m.startswith(tuple(f"{f}." for f in forbidden))
            )
        )
    }
    assert offenders == {}


def _copy_sources(tmp_path: Path) -> LambdaSource:
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    shutil.copytree(
        REPO_ROOT / "src" / "beatless",
        root / "src" / "beatless",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copytree(
        REPO_ROOT / "bin" / "lambda", root / "bin" / "lambda", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "requirements.lock"):
        shutil.copy2(REPO_ROOT / name, root / name)
    return LambdaSource(repo_root=root, handlers_dir=root / "bin" / "lambda")


def test_a_registry_job_without_its_entry_point_fails_the_bundle_by_name(tmp_path: Path) -> None:
    source = _copy_sources(tmp_path)
    (source.handlers_dir / "worker_monitor.py").unlink()
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ConfigurationError, match=r"bin/lambda/worker_monitor\.py"):
        LambdaBundle(source, [job.name for job in JOBS]).build(out)
    assert list(out.iterdir()) == []  # nothing built


def test_asset_hash_changes_with_any_input_and_only_then(tmp_path: Path) -> None:
    source = _copy_sources(tmp_path)
    names = [job.name for job in JOBS]
    first = LambdaBundle(source, names).asset_hash()
    assert LambdaBundle(source, names).asset_hash() == first
    (source.repo_root / "src" / "beatless" / "__pycache__").mkdir(exist_ok=True)
    (source.repo_root / "src" / "beatless" / "__pycache__" / "x.pyc").write_bytes(b"ignored")
    assert LambdaBundle(source, names).asset_hash() == first
    handler = source.handlers_dir / "worker_monitor.py"
    handler.write_text(handler.read_text() + "\n# changed\n")
    second = LambdaBundle(source, names).asset_hash()
    assert second != first
    lock = source.repo_root / "requirements.lock"
    lock.write_text(lock.read_text() + "\n")
    third = LambdaBundle(source, names).asset_hash()
    assert third not in (first, second)
    # What the bundle leaves out does not move its hash; any package file it holds does.
    package = source.repo_root / "src" / "beatless"
    (package / "cli.py").write_text((package / "cli.py").read_text() + "\n# changed\n")
    (package / "local" / "extra.py").write_text("# a new local-only module\n")
    assert LambdaBundle(source, names).asset_hash() == third
    runtime = package / "jobs" / "runtime.py"
    runtime.write_text(runtime.read_text() + "\n# changed\n")
    assert LambdaBundle(source, names).asset_hash() not in (first, second, third)


def test_the_rds_ca_bundle_rides_in_the_asset_where_the_environment_points(synth_variant: Any) -> None:
    from tests.infra.conftest import CA_BUNDLE_TEXT

    asset = _asset_dir(synth_variant)
    assert (asset / "certs" / "rds-ca-bundle.pem").read_text() == CA_BUNDLE_TEXT
    database_jobs = [j for j in synth_variant.config.jobs if "database" in j.needs]
    assert database_jobs
    for job in database_jobs:
        function = synth_variant.properties(synth_variant.stacks.jobs.jobs[job.name].function)
        env = function["Environment"]["Variables"]
        assert env["DATABASE_SSLROOTCERT"] == "/var/task/certs/rds-ca-bundle.pem"
        assert env["DATABASE_SSLMODE"] == "verify-full"


def test_without_a_ca_bundle_synth_warns_that_rds_certificates_will_be_refused(synth: Any) -> None:
    assert synth.config.database.ca_bundle is None or synth.config.database.ca_bundle.is_file()
    warnings = synth.warnings(synth.stacks.jobs)
    if synth.config.database.ca_bundle is None:
        assert any("RDS CA bundle" in str(w) for w in warnings), warnings
        env = _job_environment(synth, "credit_reservation_cleanup")
        assert "DATABASE_SSLROOTCERT" not in env and env["DATABASE_SSLMODE"] == "verify-full"
    else:
        assert not any("RDS CA bundle" in str(w) for w in warnings)


def _job_environment(synth: Any, name: str) -> dict[str, Any]:
    function = synth.properties(synth.stacks.jobs.jobs[name].function)
    return function["Environment"]["Variables"]  # type: ignore[no-any-return]
