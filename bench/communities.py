"""Louvain communities of a graph read from the engine and written back, against the same
library on the same edges already in memory.

    .venv/bin/python bench/communities.py               # 100,000 nodes, 500,000 edges
    .venv/bin/python bench/communities.py --smoke       # 5,000 / 25,000, a few seconds

A graph with planted communities (groups of --group nodes; 80 % of each node's edges
inside its group, the rest anywhere; deterministic) is loaded through the graph node (not
timed). Then:

1. operation — `detect_communities` run by the real runtime in this process
               (`beatless.analytics.communities`: the node exports the nodes and edges as
               Parquet, the worker maps keys to dense ids with Arrow, networkit PLM, the
               labels written back by the node in one LOAD FROM ... SET), call to return;
2. library   — the limit: networkit PLM with the same settings and seed on the same
               edges as integer arrays already in memory.

Goal: operation <= 2x the library alone, modularity within 0.01 of it.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from graph_common import BUCKET, load_average, log, operations, stack, verdict

GOALS = {"over_library": 2.0, "modularity_gap": 0.01}
GRAPH = "bench-communities"
SCHEMA = {
    "nodes": [{"name": "Company", "primary_key": "id", "properties": {"id": "STRING"}}],
    "relationships": [{"name": "Links", "from": "Company", "to": "Company"}],
}


def planted(nodes: int, edges: int, group: int, seed: int = 5) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    source = rng.integers(0, nodes, edges)
    inside = rng.random(edges) < 0.8
    group_start = source - source % group
    target = np.where(inside, group_start + rng.integers(0, group, edges), rng.integers(0, nodes, edges))
    target = np.minimum(target, nodes - 1)
    return source, target


def write_graph(work: Path, source: Any, target: Any, nodes: int) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    ids = pc.binary_join_element_wise("c", pc.cast(pa.array(range(nodes), pa.int64()), pa.string()), "")
    files = {"Company": work / "companies.parquet", "Links": work / "links.parquet"}
    pq.write_table(pa.table({"id": ids}), files["Company"])
    src = pc.binary_join_element_wise("c", pc.cast(pa.array(source), pa.string()), "")
    dst = pc.binary_join_element_wise("c", pc.cast(pa.array(target), pa.string()), "")
    pq.write_table(pa.table({"from": src, "to": dst}), files["Links"])
    return files


def library_alone(source: Any, target: Any, nodes: int, seed: int) -> dict[str, Any]:
    import networkit as nk
    import numpy as np

    started = time.perf_counter()
    graph = nk.Graph(nodes)
    graph.addEdges((source.astype(np.uint64), target.astype(np.uint64)), checkMultiEdge=False)
    graph.removeMultiEdges()
    graph.removeSelfLoops()
    nk.engineering.setSeed(seed, False)
    plm = nk.community.PLM(graph, refine=True, gamma=1.0)
    plm.run()
    partition = plm.getPartition()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "modularity": nk.community.Modularity().getQuality(partition, graph),
        "communities": partition.numberOfSubsets(),
        "edges": graph.numberOfEdges(),
    }


def _all(runs: list[Any]) -> str:
    return ", ".join(f"{(r['seconds'] if isinstance(r, dict) else r[0]):.2f}" for r in runs) + " s"


def stage_seconds(resources: Any, operation_id: str) -> dict[str, float]:
    """How long each stage took, from the operation's progress stream (event to next event)."""
    from datetime import datetime

    from beatless.operations.progress import ProgressStream

    events = ProgressStream(resources.progress_client(), operation_id).read()
    times = [(e.stage, datetime.fromisoformat(e.at.replace("Z", "+00:00"))) for e in events]
    return {stage: (later - at).total_seconds() for (stage, at), (_, later) in itertools.pairwise(times)}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--edges", type=int, default=500_000)
    parser.add_argument("--group", type=int, default=100, help="nodes per planted community")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, alternating (median)")
    parser.add_argument("--smoke", action="store_true", help="5,000 nodes, 25,000 edges, one run")
    args = parser.parse_args()
    if args.smoke:
        args.nodes, args.edges, args.repeat = 5_000, 25_000, 1
    from beatless.operations.catalogue import operation
    from beatless.operations.runtime import run_operation

    work = Path(tempfile.mkdtemp(prefix="beatless-bench-communities-"))
    try:
        source, target = planted(args.nodes, args.edges, args.group)
        files = write_graph(work, source, target, args.nodes)
        log(f"generated {args.nodes:,} nodes and {args.edges:,} edges in groups of {args.group}")
        with stack(work) as service, operations(service, work, GRAPH) as resources:
            run_operation(
                operation("create_graph"), {"graph_id": GRAPH, "schema": SCHEMA}, resources=resources
            )
            for _table, path in files.items():
                service.s3.upload_file(str(path), BUCKET, f"uploads/{path.name}")
            with service.api(timeout=600) as client:
                body = {
                    "load_id": "seed",
                    "bucket": BUCKET,
                    "files": [{"table": t, "key": f"uploads/{p.name}"} for t, p in files.items()],
                }
                assert client.post(f"/databases/{GRAPH}/load", json=body).status_code == 200
            libraries, runs = [], []
            for attempt in range(args.repeat):  # alternating; the median of each
                log(f"library alone (run {attempt + 1}) ...")
                libraries.append(library_alone(source, target, args.nodes, args.seed))
                log(f"detect_communities, the operation (run {attempt + 1}) ...")
                started = time.perf_counter()
                outcome = run_operation(
                    operation("detect_communities"),
                    {"graph_id": GRAPH, "node_table": "Company", "seed": args.seed},
                    resources=resources,
                    operation_id=f"bench-communities-{attempt}",
                )
                runs.append((time.perf_counter() - started, outcome))
            library = sorted(libraries, key=lambda r: r["seconds"])[(len(libraries) - 1) // 2]
            seconds, outcome = sorted(runs, key=lambda r: r[0])[(len(runs) - 1) // 2]
            stages = stage_seconds(resources, outcome.operation_id)
            with service.api() as client:
                answer = client.post(
                    f"/databases/{GRAPH}/query",
                    json={
                        "query": "MATCH (c:Company) RETURN count(c.community), count(DISTINCT c.community)"
                    },
                ).json()["rows"][0]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = outcome.result
    ratio = seconds / library["seconds"]
    gap = abs(result["modularity"] - library["modularity"])
    print()
    print(f"graph: {args.nodes:,} nodes, {library['edges']:,} distinct edges ({load_average()})")
    print(f"{'method':<12}{'seconds':>10}{'modularity':>12}{'communities':>13}")
    print("-" * 60)
    print(
        f"{'library':<12}{library['seconds']:>10.2f}{library['modularity']:>12.4f}{library['communities']:>13,}"
    )
    print(f"{'operation':<12}{seconds:>10.2f}{result['modularity']:>12.4f}{result['communities']:>13,}")
    print(f"(medians of {args.repeat}: library {_all(libraries)}; operation {_all(runs)})")
    print(
        "the operation's stages (its progress events): "
        + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items())
    )
    print()
    print(
        f"operation / library alone: {ratio:.2f}x (goal <= {GOALS['over_library']}x: {verdict(ratio <= 2.0)})"
    )
    most = GOALS["modularity_gap"]
    print(f"modularity gap: {gap:.4f} (goal <= {most}: {verdict(gap <= most)})")
    checks = {
        "every node has its community stored": answer[0] == args.nodes,
        # What is stored is the last run's (each run overwrites the last).
        "as many communities stored as the last run found": answer[1] == runs[-1][1].result["communities"],
    }
    wrong = 0
    for name, ok in checks.items():
        wrong += not ok
        print(f"check: {name}: {'ok' if ok else 'WRONG'}")
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
