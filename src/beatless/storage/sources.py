"""Where a graph's stored bytes are measured: pluggable usage sources.

A snapshot has four categories (columns of `storage_usage_snapshots`):
`s3_files_bytes`, `s3_tables_bytes`, `graph_bytes`, `subgraph_bytes`. Each
`UsageSource` measures some of them for a batch of graphs, NOW (a source
cannot measure the past); the collector adds the sources up.

Sources that exist today:

- `S3PrefixUsage`: the customer data bucket (`STORAGE_BUCKET`). Layout, one
  prefix per graph:

      graphs/<graph_id>/tables/...   -> s3_tables_bytes  (staged tables, e.g. Parquet)
      graphs/<graph_id>/<other>/...  -> s3_files_bytes   (uploads: files/, and anything
      graphs/<graph_id>/<object>     -> s3_files_bytes    else a graph keeps there)

  Every byte under a graph's prefix is counted; only `tables/` is told apart.
  Listed with the `list_objects_v2` paginator (1,000 keys per request).
- `GraphSizeSource` (protocol) for the graph databases themselves, adapted by
  `graph_size_usage`. Implemented today by `DirectoryGraphSizes`: a directory
  of graph databases (the local runner's data directory, `GRAPH_DATA_DIR`):

      <root>/<graph_id>/...              -> graph_bytes   (the graph's database files)
      <root>/<graph_id>/subgraphs/...    -> subgraph_bytes
      <root>/<graph_id>  (a single file) -> graph_bytes

  In AWS, `RegistryGraphSizes`: the graph registry (`GRAPH_REGISTRY_TABLE`),
  whose `size_bytes` each graph node keeps current (at every heartbeat,
  `GRAPH_HEARTBEAT_SECONDS`, 30 s by default). A graph the registry does not know, or whose database is
  gone (`deleted`, `orphaned`), has 0 graph bytes. The registry records no
  subgraphs, so subgraph_bytes = 0 there.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from beatless.graphs.registry import Registries

CATEGORIES = ("s3_files_bytes", "s3_tables_bytes", "graph_bytes", "subgraph_bytes")
TABLES_CATEGORY = "tables"
SUBGRAPHS_DIRECTORY = "subgraphs"


@dataclass(frozen=True)
class Usage:
    """Bytes per category of one graph (0 = nothing there)."""

    s3_files_bytes: int = 0
    s3_tables_bytes: int = 0
    graph_bytes: int = 0
    subgraph_bytes: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def total_bytes(self) -> int:
        return self.s3_files_bytes + self.s3_tables_bytes + self.graph_bytes + self.subgraph_bytes

    def as_row(self) -> tuple[int, int, int, int]:
        return (self.s3_files_bytes, self.s3_tables_bytes, self.graph_bytes, self.subgraph_bytes)


class UsageSource(Protocol):
    """Measures some categories of some graphs, now."""

    @property
    def name(self) -> str: ...

    def measure(self, graph_ids: Sequence[str]) -> Mapping[str, Usage]:
        """Usage per graph id; a graph the source has nothing for may be absent (= 0).
        Raises when it cannot measure (a partial figure must never become a snapshot)."""
        ...


class S3PrefixUsage:
    """Bytes under `<prefix><graph_id>/` in `bucket`: `tables/` apart, the rest as files."""

    def __init__(self, s3: Any, bucket: str, prefix: str = "graphs/") -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def measure(self, graph_ids: Sequence[str]) -> Mapping[str, Usage]:
        paginator = self.s3.get_paginator("list_objects_v2")
        found: dict[str, Usage] = {}
        for graph_id in graph_ids:
            graph_prefix = f"{self.prefix}{graph_id}/"
            files = tables = 0
            for page in paginator.paginate(Bucket=self.bucket, Prefix=graph_prefix):
                for item in page.get("Contents", ()):
                    category = item["Key"][len(graph_prefix) :].split("/", 1)
                    if len(category) == 2 and category[0] == TABLES_CATEGORY:
                        tables += int(item["Size"])
                    else:
                        files += int(item["Size"])
            if files or tables:
                found[graph_id] = Usage(s3_files_bytes=files, s3_tables_bytes=tables)
        return found


class GraphSize(NamedTuple):
    graph_bytes: int
    subgraph_bytes: int


class GraphSizeSource(Protocol):
    """The size of each graph's database (and its subgraphs), wherever the databases live."""

    @property
    def name(self) -> str: ...

    def graph_sizes(self, graph_ids: Sequence[str]) -> Mapping[str, GraphSize]: ...


class DirectoryGraphSizes:
    """Graph databases as files under `root` (layout in the module docstring).

    Sizes are apparent file sizes (`st_size`), symbolic links are not followed,
    so a link cannot make one graph pay for another's files."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def name(self) -> str:
        return f"directory:{self.root}"

    def graph_sizes(self, graph_ids: Sequence[str]) -> Mapping[str, GraphSize]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"graph data directory {self.root} does not exist")
        sizes: dict[str, GraphSize] = {}
        for graph_id in graph_ids:
            path = self.root / graph_id  # graph ids are [A-Za-z0-9_-]{1,64}: no path tricks
            if path.is_symlink() or not path.exists():
                continue
            if path.is_file():
                sizes[graph_id] = GraphSize(path.stat().st_size, 0)
                continue
            subgraphs = path / SUBGRAPHS_DIRECTORY
            whole = _tree_bytes(path)
            sub = _tree_bytes(subgraphs) if subgraphs.is_dir() and not subgraphs.is_symlink() else 0
            sizes[graph_id] = GraphSize(whole - sub, sub)
        return sizes


class RegistryGraphSizes:
    """Graph sizes from the graph registry (`beatless.graphs.registry.Registries`)."""

    def __init__(self, registries: Registries) -> None:
        self.registries = registries

    @property
    def name(self) -> str:
        return f"graph_registry:{self.registries.graph_table}"

    def graph_sizes(self, graph_ids: Sequence[str]) -> Mapping[str, GraphSize]:
        return {g: GraphSize(size, 0) for g, size in self.registries.placed_sizes(graph_ids).items()}


def _tree_bytes(root: Path) -> int:
    """Bytes of the regular files under `root` (links, sockets, ... not counted)."""
    total = 0
    for directory, _, names in os.walk(root):  # os.walk does not follow directory links
        for name in names:
            info = (Path(directory) / name).lstat()
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


class _GraphSizeUsage:
    def __init__(self, source: GraphSizeSource) -> None:
        self.source = source

    @property
    def name(self) -> str:
        return self.source.name

    def measure(self, graph_ids: Sequence[str]) -> Mapping[str, Usage]:
        return {
            graph_id: Usage(graph_bytes=size.graph_bytes, subgraph_bytes=size.subgraph_bytes)
            for graph_id, size in self.source.graph_sizes(graph_ids).items()
        }


def graph_size_usage(source: GraphSizeSource) -> UsageSource:
    """A `GraphSizeSource` as a `UsageSource` (graph_bytes and subgraph_bytes)."""
    return _GraphSizeUsage(source)


def measure(sources: Sequence[UsageSource], graph_ids: Sequence[str]) -> dict[str, Usage]:
    """Every graph of `graph_ids` with the sum of what each source measured (0 if none)."""
    totals = {graph_id: Usage() for graph_id in graph_ids}
    for source in sources:
        for graph_id, usage in source.measure(graph_ids).items():
            if graph_id in totals:
                totals[graph_id] = totals[graph_id] + usage
    return totals
