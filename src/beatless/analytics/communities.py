"""`detect_communities`: Louvain (networkit's PLM) over a node table and the relationships
joining it to itself, each node's community written back to the graph.

The edges leave the engine by bulk (the node's `COPY ... TO` Parquet export), are mapped
to dense ids with Arrow (no Python loop over the rows), and the labels return by bulk
(one Parquet file of `key`, `community`, set by the node in one `LOAD FROM ... SET`), never
one node at a time. Communities are numbered by size, largest first. PLM runs on every
core, so two runs with the same seed may differ slightly (threads interleave their moves);
a rerun overwrites the stored communities with its own. The per-graph summary (nodes,
edges, communities, modularity, the largest sizes, algorithm, resolution, seed) is the
result and is recorded in the graph registry (`communities`). The engine's own algorithm
extension downloads at run time and is unavailable offline; the graph's edges are
treated as undirected, multi-edges and self-loops dropped.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from beatless.errors import InvalidInputError
from beatless.graphs.operations import graph_size_gib, placed_node
from beatless.graphs.schema import GraphSchema, NodeTable
from beatless.operations.runtime import Operation

LARGEST_LISTED = 10


def detect_communities(op: Operation, params: dict[str, Any]) -> dict[str, Any]:
    resources = op.resources
    graph_id, table_name = params["graph_id"], params["node_table"]
    _graph, node = placed_node(resources, graph_id)
    schema = GraphSchema.parse(node.request("GET", f"/databases/{graph_id}")["schema"])
    table = schema.table(table_name)
    if not isinstance(table, NodeTable):
        raise InvalidInputError("params.node_table", f"graph {graph_id!r} has no node table {table_name!r}")
    rels = _relationships(schema, table_name, params["relationship_tables"])
    work = Path(tempfile.mkdtemp(prefix="beatless-communities-", dir=resources.work_dir()))
    try:
        op.stage("export", 5, f"exporting {table_name} and {', '.join(rels)}")
        bucket = resources.staging_bucket()
        prefix = f"analytics/{op.operation_id.replace(':', '-')}/"
        exported = node.export(graph_id, bucket, prefix, [table_name, *rels])
        s3 = resources.s3()
        local = {}
        for item in exported["files"]:
            local[item["table"]] = work / f"{item['table']}.parquet"
            s3.download_file(bucket, item["key"], str(local[item["table"]]))
        op.stage("detect", 35, "Louvain (networkit PLM)")
        keys, labels, found = louvain(
            local[table_name],
            table.primary_key,
            [local[r] for r in rels],
            resolution=params["resolution"],
            seed=params["seed"],
        )
        op.stage(
            "store", 80, f"writing {found['communities']} communities to {table_name}.{params['property']}"
        )
        labels_file = work / "labels.parquet"
        write_labels(keys, labels, labels_file)
        labels_key = f"{prefix}labels.parquet"
        s3.upload_file(str(labels_file), bucket, labels_key)
        kind = schema_type(table, params["property"])
        node.set_property(graph_id, table_name, params["property"], kind, bucket, labels_key)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        "node_table": table_name,
        "relationship_tables": rels,
        "property": params["property"],
        **found,
        "resolution": params["resolution"],
        "seed": params["seed"],
        "algorithm": f"networkit {_networkit_version()} PLM (refined)",
        "operation_id": op.operation_id,
    }
    resources.registries().record_communities(graph_id, summary)
    return {**summary, "units": graph_size_gib(resources, {"graph_id": graph_id})}


def _relationships(schema: GraphSchema, table: str, asked: list[str]) -> list[str]:
    joining = [r.name for r in schema.relationships if r.source == table and r.target == table]
    for i, name in enumerate(asked):
        if name not in joining:
            raise InvalidInputError(
                f"params.relationship_tables[{i}]", f"{name!r} is not a relationship from {table} to {table}"
            )
    chosen = asked or joining
    if not chosen:
        raise InvalidInputError("params.relationship_tables", f"no relationship joins {table} to itself")
    return chosen


def schema_type(table: NodeTable, prop: str) -> str:
    """INT64 for a new property; one that exists must be INT64 already."""
    kind = table.properties.get(prop, "INT64")
    if kind != "INT64" or prop == table.primary_key:
        raise InvalidInputError(
            "params.property", f"{table.name}.{prop} is {kind}: communities need an INT64"
        )
    return kind


def louvain(
    nodes_file: Path, key: str, edge_files: list[Path], *, resolution: float, seed: int
) -> tuple[Any, Any, dict[str, Any]]:
    """The node keys, each one's community (0 = the largest), and the figures."""
    import networkit as nk
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    keys = pq.read_table(nodes_file, columns=[key]).column(key).combine_chunks()
    sources, targets = [], []
    for path in edge_files:
        edges = pq.read_table(path, columns=["from", "to"])
        sources.append(pc.index_in(edges.column("from"), value_set=keys).to_numpy(zero_copy_only=False))
        targets.append(pc.index_in(edges.column("to"), value_set=keys).to_numpy(zero_copy_only=False))
    source = np.concatenate(sources) if sources else np.empty(0)
    target = np.concatenate(targets) if targets else np.empty(0)
    graph = nk.Graph(len(keys))
    if len(source):
        graph.addEdges((source.astype(np.uint64), target.astype(np.uint64)), checkMultiEdge=False)
        graph.removeMultiEdges()
        graph.removeSelfLoops()
    nk.engineering.setSeed(seed, False)
    algorithm = nk.community.PLM(graph, refine=True, gamma=resolution)
    algorithm.run()
    partition = algorithm.getPartition()
    raw = np.asarray(partition.getVector(), dtype=np.int64)
    # Renumber by size, largest first (ties: the smaller original id), for stable numbers.
    ids, counts = np.unique(raw, return_counts=True)
    order = np.lexsort((ids, -counts))
    renumber = np.empty(ids.max() + 1 if len(ids) else 0, dtype=np.int64)
    renumber[ids[order]] = np.arange(len(ids))
    labels = renumber[raw] if len(raw) else raw
    figures = {
        "nodes": int(graph.numberOfNodes()),
        "edges": int(graph.numberOfEdges()),
        "communities": len(ids),
        "modularity": float(nk.community.Modularity().getQuality(partition, graph)) if len(source) else 0.0,
        "largest": [int(c) for c in counts[order][:LARGEST_LISTED]],
    }
    return keys, labels, figures


def write_labels(keys: Any, labels: Any, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"key": keys, "value": pa.array(labels, pa.int64())}), path)


def _networkit_version() -> str:
    import networkit as nk

    return str(nk.__version__)
