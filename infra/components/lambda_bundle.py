"""The one code asset every scheduled Lambda runs from, bundled without Docker.

The zip holds, at its root: the `lambda` extra's dependencies installed by uv
for CPython 3.12 on manylinux x86_64 (binary wheels only, pinned by
requirements.lock), the `beatless` package copied from `src/` without what
only runs elsewhere (`EXCLUDED`: the local runner, the CLI, the graph node),
and every `bin/lambda/*.py` entry point. CDK's local bundling runs `LocalPythonBundler`
in-process at synth; the Docker image named in `BundlingOptions` is never used.

The asset hash is computed from exactly the inputs (pyproject, lock, the
package files the bundle holds, entry points, target), so an unchanged bundle is not rebuilt when
`cdk.out` already holds it, and no directory walk over `.venv` happens.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

from beatless.errors import ConfigurationError
from infra.config import LambdaSource

PYTHON_VERSION = "3.12"
PLATFORM = "x86_64-manylinux2014"
EXTRA = "lambda"
# Paths inside the `beatless` package that stay out of the bundle (and its hash):
# the local runner, the developer CLI and the graph node service (LadybugDB, on EC2); no
# Lambda code imports them (tests/unit/test_import_rules.py).
EXCLUDED = (Path("local"), Path("cli.py"), Path("graphs") / "node")
_COMPILED = (".pyc", ".pyo")


def package_files(package_dir: Path) -> list[Path]:
    """The files of the package the bundle holds, sorted: no bytecode, nothing `EXCLUDED`."""
    return sorted(
        p
        for p in package_dir.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and p.suffix not in _COMPILED
        and not any(p.relative_to(package_dir).is_relative_to(excluded) for excluded in EXCLUDED)
    )


def extra_requirements(pyproject: Path, extra: str = EXTRA) -> list[str]:
    """The requirement strings of `extra` in pyproject.toml (the bundle's only dependencies)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    try:
        return list(project["optional-dependencies"][extra])
    except KeyError:
        raise ConfigurationError(f"{pyproject}: no [project.optional-dependencies] {extra!r}") from None


class LambdaBundle:
    """Builds (and hashes) the bundle directory."""

    def __init__(
        self, source: LambdaSource, handlers: Sequence[str], extra_files: Mapping[str, Path] | None = None
    ):
        self.source = source
        self.handlers = tuple(handlers)  # file stems in source.handlers_dir (the job names)
        # path inside the bundle -> local file (e.g. the RDS CA bundle)
        self.extra_files = dict(sorted((extra_files or {}).items()))
        self.uv = source.uv or Path(sys.executable).with_name("uv")

    @property
    def package_dir(self) -> Path:
        return self.source.repo_root / "src" / "beatless"

    def missing_handlers(self) -> list[Path]:
        return [p for p in (self.source.handlers_dir / f"{h}.py" for h in self.handlers) if not p.is_file()]

    def asset_hash(self) -> str:
        digest = hashlib.sha256(f"python{PYTHON_VERSION}/{PLATFORM}/{EXTRA}/v2".encode())
        root = self.source.repo_root
        inputs = [root / "pyproject.toml", root / "requirements.lock"]
        inputs += package_files(self.package_dir)
        inputs += sorted(self.source.handlers_dir.glob("*.py"))
        for path in inputs:
            digest.update(str(path.relative_to(root) if path.is_relative_to(root) else path.name).encode())
            digest.update(b"\0" + path.read_bytes() + b"\0")
        for target, path in self.extra_files.items():
            digest.update(f"extra:{target}".encode() + b"\0" + path.read_bytes() + b"\0")
        return digest.hexdigest()

    def build(self, out: Path) -> None:
        """Fill `out`; raises with a message naming what is missing or what failed."""
        missing = self.missing_handlers()
        if missing:
            raise ConfigurationError(
                "Lambda bundle: the job registry names entry points that do not exist: "
                + ", ".join(str(p) for p in missing)
            )
        if not self.uv.is_file():
            raise ConfigurationError(f"Lambda bundle: uv not found at {self.uv} (run scripts/setup.sh)")
        root = self.source.repo_root
        command = [
            str(self.uv),
            "pip",
            "install",
            "--quiet",
            "--no-config",
            "--target",
            str(out),
            "--python-version",
            PYTHON_VERSION,
            "--python-platform",
            PLATFORM,
            "--only-binary",
            ":all:",
            "--constraint",
            str(root / "requirements.lock"),
            *extra_requirements(root / "pyproject.toml"),
        ]
        result = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ConfigurationError(
                f"Lambda bundle: uv pip install failed (exit {result.returncode}):\n{result.stderr.strip()}"
            )
        # uv puts console scripts (shebangs of this host's Python) in bin/: useless in Lambda.
        shutil.rmtree(out / "bin", ignore_errors=True)
        (out / ".lock").unlink(missing_ok=True)  # uv's lock file of the target directory
        for path in package_files(self.package_dir):
            destination = out / "beatless" / path.relative_to(self.package_dir)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
        for entry_point in self.source.handlers_dir.glob("*.py"):
            shutil.copy2(entry_point, out / entry_point.name)
        for target, path in self.extra_files.items():
            (out / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out / target)


@jsii.implements(ILocalBundling)
class LocalPythonBundler:
    """CDK's hook for bundling on the host instead of in a container."""

    def __init__(self, bundle: LambdaBundle):
        self.bundle = bundle

    def try_bundle(self, output_dir: str, options: BundlingOptions) -> bool:
        # Failures raise (synth stops with the message) rather than returning
        # False, which would make CDK fall back to Docker and fail obscurely.
        self.bundle.build(Path(output_dir))
        return True


def lambda_code(
    source: LambdaSource, handlers: Sequence[str], extra_files: Mapping[str, Path] | None = None
) -> lambda_.Code:
    """One `Code` for all functions: CDK stages (and uploads) it once."""
    bundle = LambdaBundle(source, handlers, extra_files)
    return lambda_.Code.from_asset(
        str(source.handlers_dir),
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=bundle.asset_hash(),
        bundling=BundlingOptions(
            image=DockerImage.from_registry("unused-local-bundling-only"),
            # jsii calls try_bundle(output_dir, options) positionally, although the
            # typing stub of ILocalBundling spells the options out as keywords.
            local=LocalPythonBundler(bundle),  # type: ignore[arg-type]
        ),
    )
