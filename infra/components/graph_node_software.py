"""The graph node's software as one S3 asset, staged without Docker.

The zip holds what `pip install "<dir>[graph]"` needs to build and install
Beatless on an instance: `pyproject.toml`, a one-line `README.md` (setuptools
reads the readme pyproject names; the real one would make every docs edit a
new launch template version), `requirements.lock` (the pins, used as constraints)
and the whole `src/beatless` package without bytecode (the node runs the
`beatless graph-node` console script, so the CLI is included). The user data
downloads it with the instance role (`s3:GetObject` on this one object) and
installs it with Python 3.12; the dependencies come from the package index,
pinned by the lock.

The asset hash is computed from exactly these files, so an unchanged tree
is not staged again.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

TOP_LEVEL_FILES = ("pyproject.toml", "requirements.lock")
README_STUB = b"Beatless graph node software; see the repository's README.md.\n"
_COMPILED = (".pyc", ".pyo")


def node_source_files(repo_root: Path) -> list[Path]:
    """The files the asset holds (relative to `repo_root`), sorted."""
    package = repo_root / "src" / "beatless"
    files = [Path(name) for name in TOP_LEVEL_FILES]
    files += sorted(
        p.relative_to(repo_root)
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in _COMPILED
    )
    return files


def node_source_hash(repo_root: Path) -> str:
    digest = hashlib.sha256(b"beatless-graph-node/v1" + README_STUB)
    for relative in node_source_files(repo_root):
        digest.update(str(relative).encode() + b"\0" + (repo_root / relative).read_bytes() + b"\0")
    return digest.hexdigest()


@jsii.implements(ILocalBundling)
class _CopySources:
    def __init__(self, repo_root: Path):
        self.repo_root = repo_root

    def try_bundle(self, output_dir: str, options: BundlingOptions) -> bool:
        for relative in node_source_files(self.repo_root):
            destination = Path(output_dir) / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.repo_root / relative, destination)
        (Path(output_dir) / "README.md").write_bytes(README_STUB)
        return True


class GraphNodeSoftware(Construct):
    def __init__(self, scope: Construct, id: str, *, repo_root: Path):
        super().__init__(scope, id)
        self.asset = s3_assets.Asset(
            self,
            "Asset",
            path=str(repo_root / "src"),
            asset_hash_type=AssetHashType.CUSTOM,
            asset_hash=node_source_hash(repo_root),
            bundling=BundlingOptions(
                image=DockerImage.from_registry("unused-local-bundling-only"),
                local=_CopySources(repo_root),  # type: ignore[arg-type]
            ),
        )

    @property
    def s3_url(self) -> str:
        return self.asset.s3_object_url

    def read_statement(self) -> iam.PolicyStatement:
        """Read this one object of the CDK assets bucket."""
        return iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[self.asset.bucket.arn_for_objects(self.asset.s3_object_key)]
        )
