"""Usage sources that need no network: a directory of graph databases, and how
the collector adds sources up; the collector's environment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from beatless.errors import InvalidInputError
from beatless.storage import (
    CollectorSettings,
    DirectoryGraphSizes,
    GraphSize,
    Usage,
    graph_size_usage,
    measure,
)


def test_a_directory_of_graph_databases_is_measured_per_graph(tmp_path: Path) -> None:
    (tmp_path / "g1" / "subgraphs" / "a").mkdir(parents=True)
    (tmp_path / "g1" / "db").write_bytes(b"x" * 1000)
    (tmp_path / "g1" / "nested").mkdir()
    (tmp_path / "g1" / "nested" / "wal").write_bytes(b"x" * 24)
    (tmp_path / "g1" / "subgraphs" / "a" / "db").write_bytes(b"x" * 300)
    (tmp_path / "g1" / "subgraphs" / "b.lbug").write_bytes(b"x" * 7)
    (tmp_path / "single.lbug").write_bytes(b"x")
    (tmp_path / "single").write_bytes(b"x" * 5)  # a graph stored as one file
    (tmp_path / "g2").mkdir()
    sizes = DirectoryGraphSizes(tmp_path).graph_sizes(["g1", "single", "g2", "absent"])
    assert sizes == {"g1": GraphSize(1024, 307), "single": GraphSize(5, 0), "g2": GraphSize(0, 0)}


def test_links_never_make_a_graph_pay_for_other_files(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "big").write_bytes(b"x" * 10_000)
    root = tmp_path / "graphs"
    (root / "g1").mkdir(parents=True)
    (root / "g1" / "db").write_bytes(b"x" * 10)
    (root / "g1" / "linked-file").symlink_to(other / "big")
    (root / "g1" / "linked-dir").symlink_to(other, target_is_directory=True)
    (root / "g1" / "subgraphs").symlink_to(other, target_is_directory=True)
    (root / "g2").symlink_to(other, target_is_directory=True)
    sizes = DirectoryGraphSizes(root).graph_sizes(["g1", "g2"])
    assert sizes == {"g1": GraphSize(10, 0)}


def test_a_missing_data_directory_is_an_error_not_zero_bytes(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DirectoryGraphSizes(tmp_path / "nope").graph_sizes(["g1"])


class _Fixed:
    def __init__(self, name: str, sizes: Mapping[str, GraphSize]) -> None:
        self._name, self._sizes = name, sizes

    @property
    def name(self) -> str:
        return self._name

    def graph_sizes(self, graph_ids: Sequence[str]) -> Mapping[str, GraphSize]:
        return {g: s for g, s in self._sizes.items() if g in graph_ids}


def test_sources_add_up_and_every_graph_asked_for_gets_a_usage() -> None:
    first = graph_size_usage(_Fixed("nodes-a", {"g1": GraphSize(10, 1), "stranger": GraphSize(5, 5)}))
    second = graph_size_usage(_Fixed("nodes-b", {"g1": GraphSize(3, 2)}))
    totals = measure([first, second], ["g1", "g2"])
    assert totals == {"g1": Usage(graph_bytes=13, subgraph_bytes=3), "g2": Usage()}
    assert totals["g1"].total_bytes == 16 and totals["g1"].as_row() == (0, 0, 13, 3)
    assert first.name == "nodes-a"


def test_the_collector_environment() -> None:
    settings = CollectorSettings.from_env({"STORAGE_BUCKET": "data", "GRAPH_DATA_DIR": "/var/graphs"})
    assert (settings.bucket, settings.prefix, settings.graph_data_dir) == (
        "data",
        "graphs/",
        Path("/var/graphs"),
    )
    assert CollectorSettings.from_env({"STORAGE_BUCKET": "d", "STORAGE_PREFIX": "t/g/"}).prefix == "t/g/"
    for env, field in (
        ({}, "STORAGE_BUCKET"),
        ({"STORAGE_BUCKET": "d", "STORAGE_PREFIX": "/graphs/"}, "STORAGE_PREFIX"),
        ({"STORAGE_BUCKET": "d", "GRAPH_DATA_DIR": "graphs"}, "GRAPH_DATA_DIR"),
    ):
        with pytest.raises(InvalidInputError) as info:
            CollectorSettings.from_env(env)
        assert info.value.field == field
