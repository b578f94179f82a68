#!/usr/bin/env python3
"""Behaviour diff of two synthesized CDK apps (two cdk.out directories).

Usage: python scripts/compare_templates.py BEFORE_DIR AFTER_DIR

Loads every `*.template.json` of both cloud assemblies (one per stack, by file
name; asset directories are skipped), removes what legitimately changes from
one build to the next, and prints per stack:

* resources added / removed (logical id and type);
* resources whose definition differs (a short diff per property path:
  Properties, DependsOn, DeletionPolicy, Metadata, ...), and a changed type;
* any other section that differs (Outputs, Parameters, Conditions, Rules, ...).

Then a verdict line listing every STATEFUL resource (databases, buckets,
secrets, caches, tables, queues, log groups, keys, ...) whose logical id
disappeared or appeared: for CloudFormation that is a delete or a create,
i.e. data lost or a fresh empty resource.

Normalised (not differences):

* asset hashes: a 64-hex hash of an asset the directory's `*.assets.json`
  lists (S3 keys `<hash>.zip`, image tags) becomes `<asset:NAME>` (NAME: the
  asset's display name, else `?`); any other 64-hex S3 key, image tag or
  `asset.<hash>` path becomes `<asset:?>`. Which assets changed content is
  printed as information;
* resource metadata `aws:asset:*` (the staged asset path and property), and
  `aws:cdk:path` when only one side has path metadata at all (`cdk synth`
  adds it, a plain `App().synth()` does not);
* the CDK version-reporting resource (`AWS::CDK::Metadata`) and its
  `CDKMetadataAvailable` condition.

Exit status: 0 when nothing but the normalised parts differ, 1 when anything
else differs, 2 on a usage error (a directory without templates).
Standard library only; reads the directories, writes nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Resource types whose delete (or create) loses (or starts without) data.
STATEFUL_PREFIXES = (
    "AWS::RDS::",
    "AWS::ElastiCache::",
    "AWS::MemoryDB::",
    "AWS::DocDB::",
    "AWS::Neptune::",
    "AWS::Redshift::",
    "AWS::DynamoDB::",
)
STATEFUL_TYPES = frozenset(
    {
        "AWS::S3::Bucket",
        "AWS::SecretsManager::Secret",
        "AWS::SQS::Queue",
        "AWS::Logs::LogGroup",
        "AWS::KMS::Key",
        "AWS::EFS::FileSystem",
        "AWS::EC2::Volume",
        "AWS::ECR::Repository",
        "AWS::Kinesis::Stream",
        "AWS::Cognito::UserPool",
        "AWS::OpenSearchService::Domain",
        "AWS::Elasticsearch::Domain",
        "AWS::Backup::BackupVault",
        "AWS::EventSchemas::Registry",
        "AWS::SSM::Parameter",
    }
)
CDK_METADATA_TYPE = "AWS::CDK::Metadata"
CDK_METADATA_CONDITION = "CDKMetadataAvailable"
HASH = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
# Where an asset hash the manifests do not list can still appear.
UNLISTED_ASSET = re.compile(r"(?<=asset\.)[0-9a-f]{64}|[0-9a-f]{64}(?=\.(?:zip|json)\b)|(?<=:)[0-9a-f]{64}$")
MAX_VALUE = 160  # characters of a value shown in a diff line
MAX_LINES = 12  # diff lines shown per resource


def is_stateful(type_: str) -> bool:
    return type_ in STATEFUL_TYPES or type_.startswith(STATEFUL_PREFIXES)


@dataclass
class Assembly:
    """The templates of one cdk.out, and the assets its manifests list."""

    root: Path
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)  # by stack (file stem)
    assets: dict[str, str] = field(default_factory=dict)  # hash -> display name

    @classmethod
    def load(cls, root: Path) -> Assembly:
        assembly = cls(root)
        for path in sorted(_outside_assets(root, "*.template.json")):
            assembly.templates[path.name.removesuffix(".template.json")] = json.loads(path.read_text())
        for path in sorted(_outside_assets(root, "*.assets.json")):
            manifest = json.loads(path.read_text())
            for kind in ("files", "dockerImages"):
                for asset_hash, asset in manifest.get(kind, {}).items():
                    name = asset.get("displayName") or "?"
                    if not name.endswith(" Template"):  # the stack template itself
                        assembly.assets[asset_hash] = f"{path.name.removesuffix('.assets.json')}/{name}"
        return assembly

    @property
    def has_path_metadata(self) -> bool:
        return any(
            "aws:cdk:path" in resource.get("Metadata", {})
            for template in self.templates.values()
            for resource in template.get("Resources", {}).values()
        )

    def normalised(self, *, keep_paths: bool) -> dict[str, dict[str, Any]]:
        return {stack: self._normalise_template(t, keep_paths) for stack, t in self.templates.items()}

    def _normalise_template(self, template: dict[str, Any], keep_paths: bool) -> dict[str, Any]:
        template = self._normalise(template)
        resources = template.get("Resources", {})
        for logical_id in [k for k, r in resources.items() if r.get("Type") == CDK_METADATA_TYPE]:
            del resources[logical_id]
        conditions = template.get("Conditions", {})
        conditions.pop(CDK_METADATA_CONDITION, None)
        if "Conditions" in template and not conditions:
            del template["Conditions"]
        for resource in resources.values():
            metadata = resource.get("Metadata")
            if isinstance(metadata, dict):
                for key in [k for k in metadata if k.startswith("aws:asset:") or k == "aws:cdk:path"]:
                    if key == "aws:cdk:path" and keep_paths:
                        continue
                    del metadata[key]
                if not metadata:
                    del resource["Metadata"]
        return template

    def _normalise(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {self._normalise(k): self._normalise(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._normalise(v) for v in value]
        if isinstance(value, str):
            value = HASH.sub(lambda m: self._label(m.group(0)) or m.group(0), value)
            return UNLISTED_ASSET.sub("<asset:?>", value)
        return value

    def _label(self, asset_hash: str) -> str | None:
        name = self.assets.get(asset_hash)
        return None if name is None else f"<asset:{name}>"


def _outside_assets(root: Path, pattern: str) -> Iterator[Path]:
    for path in root.rglob(pattern):
        if not any(part.startswith("asset.") for part in path.relative_to(root).parts[:-1]):
            yield path


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 3] + "..."


def diff(before: Any, after: Any, path: str = "") -> Iterator[str]:
    """Lines `path: before -> after` (added/removed keys and list items named as such)."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in after:
                yield f"{where}: removed {_short(before[key])}"
            elif key not in before:
                yield f"{where}: added {_short(after[key])}"
            else:
                yield from diff(before[key], after[key], where)
    elif isinstance(before, list) and isinstance(after, list):
        if len(before) == len(after):
            for index, (old, new) in enumerate(zip(before, after, strict=True)):
                yield from diff(old, new, f"{path}[{index}]")
            return
        old_items = [json.dumps(v, sort_keys=True) for v in before]
        new_items = [json.dumps(v, sort_keys=True) for v in after]
        for index, item in enumerate(old_items):
            if item not in new_items:
                yield f"{path}[{index}]: removed {_short(before[index])}"
        for index, item in enumerate(new_items):
            if item not in old_items:
                yield f"{path}[{index}]: added {_short(after[index])}"
        if sorted(old_items) == sorted(new_items):
            yield f"{path}: same items, reordered"
    elif isinstance(before, str) and isinstance(after, str) and before != after:
        yield from _diff_text(before, after, path)
    elif before != after:
        yield f"{path}: {_short(before)} -> {_short(after)}"


def _diff_text(before: str, after: str, path: str) -> Iterator[str]:
    old_json, new_json = _json_document(before), _json_document(after)
    if old_json is not None and new_json is not None:  # e.g. a schema's Content
        yield from diff(old_json, new_json, f"{path}<json>")
    elif len(before) > MAX_VALUE or len(after) > MAX_VALUE:
        yield f"{path}: {_around_first_difference(before, after)}"
    else:
        yield f"{path}: {_short(before)} -> {_short(after)}"


def _json_document(text: str) -> Any:
    """`text` parsed when it is a JSON object or array, else None."""
    if not text.lstrip().startswith(("{", "[")):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict | list) else None


def _around_first_difference(before: str, after: str) -> str:
    start = next((i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), None)
    if start is None:
        start = min(len(before), len(after))
    start = max(0, start - 20)
    width = MAX_VALUE // 2
    return (
        f"(long text, first difference at {start + 20}) ..{_short(before[start : start + width])}.. -> "
        f"..{_short(after[start : start + width])}.."
    )


@dataclass
class Report:
    differences: int = 0
    stateful_gone: list[str] = field(default_factory=list)
    stateful_new: list[str] = field(default_factory=list)
    stateful_changed: list[str] = field(default_factory=list)

    def line(self, text: str, *, counts: bool = True) -> None:
        print(text)
        if counts:
            self.differences += 1


def _details(lines: list[str]) -> Iterator[str]:
    yield from lines[:MAX_LINES]
    if len(lines) > MAX_LINES:
        yield f"... {len(lines) - MAX_LINES} more"


def _added_and_removed(stack: str, old: dict[str, Any], new: dict[str, Any], report: Report) -> bool:
    found = False
    for logical_ids, resources, sign, verb, bucket in (
        (set(old) - set(new), old, "-", "removed", report.stateful_gone),
        (set(new) - set(old), new, "+", "added", report.stateful_new),
    ):
        for logical_id in sorted(logical_ids):
            type_ = resources[logical_id]["Type"]
            report.line(f"  {sign} {logical_id} ({type_}) {verb}")
            if is_stateful(type_):
                bucket.append(f"{stack}/{logical_id} ({type_})")
            found = True
    return found


def _changed(stack: str, old: dict[str, Any], new: dict[str, Any], report: Report) -> bool:
    found = False
    for logical_id in sorted(set(old) & set(new)):
        if old[logical_id] == new[logical_id]:
            continue
        found = True
        old_type, new_type = old[logical_id]["Type"], new[logical_id]["Type"]
        if old_type != new_type:
            report.line(f"  ! {logical_id} type {old_type} -> {new_type} (a replacement)")
            for type_, bucket in ((old_type, report.stateful_gone), (new_type, report.stateful_new)):
                if is_stateful(type_):
                    bucket.append(f"{stack}/{logical_id} ({type_})")
            continue
        report.line(f"  ~ {logical_id} ({new_type})")
        for text in _details(list(diff(old[logical_id], new[logical_id]))):
            print(f"      {text}")
        if is_stateful(new_type):
            report.stateful_changed.append(f"{stack}/{logical_id} ({new_type})")
    return found


def compare_stack(stack: str, before: dict[str, Any], after: dict[str, Any], report: Report) -> None:
    print(f"== {stack}")
    old, new = before.get("Resources", {}), after.get("Resources", {})
    found = _added_and_removed(stack, old, new, report)
    found = _changed(stack, old, new, report) or found
    for section in sorted((set(before) | set(after)) - {"Resources"}):
        if before.get(section) != after.get(section):
            found = True
            report.line(f"  ~ section {section}")
            for text in _details(list(diff(before.get(section), after.get(section), section))):
                print(f"      {text}")
    if not found:
        print("  (no differences)")


def print_assets(before: Assembly, after: Assembly) -> None:
    """Information only: which assets (by display name) changed content."""
    old = {name: asset_hash for asset_hash, name in before.assets.items()}
    new = {name: asset_hash for asset_hash, name in after.assets.items()}
    print("== assets (normalised; information only)")
    for name in sorted(set(old) | set(new)):
        if name not in new:
            print(f"  - {name}")
        elif name not in old:
            print(f"  + {name}")
        else:
            state = "unchanged" if old[name] == new[name] else "content changed"
            print(f"    {name}: {state} ({old[name][:12]} -> {new[name][:12]})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="cdk.out of the old code")
    parser.add_argument("after", type=Path, help="cdk.out of the new code")
    args = parser.parse_args(argv)
    before, after = Assembly.load(args.before), Assembly.load(args.after)
    for assembly in (before, after):
        if not assembly.templates:
            print(f"no *.template.json in {assembly.root}", file=sys.stderr)
            return 2
    print_assets(before, after)
    keep_paths = before.has_path_metadata and after.has_path_metadata
    old, new = before.normalised(keep_paths=keep_paths), after.normalised(keep_paths=keep_paths)
    report = Report()
    for stack in sorted(set(old) | set(new)):
        if stack not in new or stack not in old:
            gone = stack not in new
            template = old[stack] if gone else new[stack]
            report.line(f"== {stack}: stack {'removed' if gone else 'added'}")
            for logical_id, resource in sorted(template.get("Resources", {}).items()):
                if is_stateful(resource["Type"]):
                    bucket = report.stateful_gone if gone else report.stateful_new
                    bucket.append(f"{stack}/{logical_id} ({resource['Type']})")
            continue
        compare_stack(stack, old[stack], new[stack], report)
    print("== verdict")
    if report.stateful_changed:
        print("  stateful resources kept, definition changed: " + ", ".join(report.stateful_changed))
    if report.stateful_gone or report.stateful_new:
        print(
            "  STATEFUL logical ids disappeared: "
            + (", ".join(report.stateful_gone) or "none")
            + "; appeared: "
            + (", ".join(report.stateful_new) or "none")
        )
    else:
        print("  no stateful resource disappeared or appeared")
    if report.differences:
        print(f"  {report.differences} difference(s) beyond the normalised parts")
        return 1
    print("  templates equal up to asset hashes and CDK metadata")
    return 0


if __name__ == "__main__":
    sys.exit(main())
