"""The one Lambda asset: built without Docker, handlers and `beatless` at the
zip root, dependencies for CPython 3.12 manylinux x86_64."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from beatless.errors import ConfigurationError
from beatless.jobs import JOBS
from infra.config import LambdaSource
from infra.constructs.lambda_bundle import LambdaBundle

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]


def _asset_dir(synth: Any) -> Path:
    manifest = json.loads((synth.outdir / f"{synth.stacks.jobs.stack_name}.assets.json").read_text())
    # The stack's own template is a file asset too; the code is the one zip.
    (asset,) = [a for a in manifest["files"].values() if a["source"].get("packaging") == "zip"]
    return Path(synth.outdir / asset["source"]["path"])


def test_all_functions_share_one_asset(synth: Any) -> None:
    codes = {json.dumps(f["Code"], sort_keys=True) for f in synth.resources("AWS::Lambda::Function").values()}
    assert len(codes) == 1


def test_asset_holds_handlers_beatless_and_cp312_manylinux_dependencies(synth: Any) -> None:
    asset = _asset_dir(synth)
    for job in JOBS:
        assert (asset / f"{job.name}.py").is_file()
    assert (asset / "beatless" / "__init__.py").is_file()
    assert (asset / "beatless" / "jobs.py").read_bytes() == (
        REPO_ROOT / "src" / "beatless" / "jobs.py"
    ).read_bytes()
    for package in ("aws_lambda_powertools", "redis", "boto3"):
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
    assert LambdaBundle(source, names).asset_hash() not in (first, second)
