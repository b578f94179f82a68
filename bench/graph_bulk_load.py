"""Bulk load of a graph: through the graph node, against the engine's own COPY and row-by-row CREATE.

    .venv/bin/python bench/graph_bulk_load.py                       # 1,000,000 nodes, 5,000,000 rels
    .venv/bin/python bench/graph_bulk_load.py --smoke               # 20,000 / 100,000, a few seconds
    .venv/bin/python bench/graph_bulk_load.py --profile             # + where the node's time goes

Generates the graph deterministically as two Parquet files in a temporary directory
(`bench/graph_common.py`: `Company` with a STRING key, `Owns` with a DOUBLE property,
as the tests' schema), then loads it three ways:

1. node — moto's server (S3) and a `beatless graph-node` process on free ports, the node's
          default settings; the files uploaded to S3 first (timed apart), then
          `POST /databases/{id}/load` with both files: the node fetches them from S3,
          checks their columns and COPYs them. Timed from the request to the response;
2. raw  — the limit: the engine's own `COPY FROM` of the same local files into a fresh
          database in this process, with the node's buffer pool, size cap and threads
          (`NodeSettings` read from the same environment the node gets);
3. row  — what a naive application does: one auto-committed Cypher `CREATE` per node, then
          one `MATCH ... CREATE` per relationship, on a sample (--sample nodes and as many
          relationships among them) in a fresh database with the same settings; each rate
          extrapolated to the full size (generous: an empty table's index is the cheapest).
          `row-mem` does the same in an in-memory database (no write-ahead log to sync per
          commit): the naive app's best case, for reference, not judged.

raw and node run --repeat times, alternating (each node run into a new graph; the files
uploaded once), and the median run of each is compared: the machine is noisy. After
each it counts nodes and relationships (MATCH count; for the node through its /query
endpoint) and checks the sum of `revenue`. Goals: node / raw <= 1.3x,
row-by-row / node >= 100x.

--profile then runs the node's own load path (`DatabaseHost.load`, the same S3 client
settings) in this process with every phase timed — S3 fetch, column checks, table
counts, journal writes, COPY — to show where the time beyond the raw COPY goes.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from graph_common import (
    BUCKET,
    SCHEMA,
    Stack,
    load_average,
    log,
    node_settings,
    query,
    stack,
    verdict,
    write_nodes,
    write_rels,
)

GOALS = {"node_over_raw": 1.3, "row_over_node": 100.0}
GRAPH = "bench-load"
COUNTS = {
    "Company": "MATCH (c:Company) RETURN count(*), sum(c.revenue)",
    "Owns": "MATCH ()-[o:Owns]->() RETURN count(*), sum(o.share)",
}


def expected_revenue(nodes: int) -> float:
    return 1.5 * nodes * (nodes - 1) / 2


def open_database(path: Path | None, settings: Any) -> tuple[Any, Any]:
    import ladybug

    database = ladybug.Database(
        None if path is None else str(path),
        buffer_pool_size=settings.buffer_pool_bytes,
        max_db_size=settings.max_db_size_bytes,
        max_num_threads=settings.threads,
    )
    return database, ladybug.Connection(database, num_threads=settings.threads)


def create_schema(conn: Any) -> None:
    from beatless.graphs.schema import GraphSchema

    for statement in GraphSchema.parse(SCHEMA).ddl():
        conn.execute(statement)
    conn.execute("CHECKPOINT")  # as the node's create does


def counts_in(conn: Any) -> dict[str, tuple[int, float]]:
    found = {}
    for table, text in COUNTS.items():
        row = conn.execute(text).get_next()
        found[table] = (int(row[0]), float(row[1] or 0.0))
    return found


# -- the three methods ----------------------------------------------------------------------


def run_raw(work: Path, files: dict[str, Path], settings: Any) -> dict[str, Any]:
    folder = work / "raw"
    folder.mkdir()
    database, conn = open_database(folder / "graph.lbdb", settings)
    try:
        create_schema(conn)
        steps = {}
        started = time.perf_counter()
        for table in ("Company", "Owns"):
            t0 = time.perf_counter()
            conn.execute(f"COPY `{table}` FROM '{files[table]}'")
            steps[table] = time.perf_counter() - t0
        seconds = time.perf_counter() - started
        counted = counts_in(conn)
    finally:
        conn.close()
        database.close()
    size = sum(p.stat().st_blocks * 512 for p in folder.iterdir())
    shutil.rmtree(folder)
    return {"seconds": seconds, "steps": steps, "counts": counted, "size": size}


def run_node(service: Stack, files: dict[str, Path], attempt: int) -> dict[str, Any]:
    started = time.perf_counter()
    if attempt == 0:
        for path in files.values():
            service.s3.upload_file(str(path), BUCKET, f"uploads/{GRAPH}/{path.name}")
    uploaded = time.perf_counter() - started
    body = {
        "load_id": "bench-load-1",
        "bucket": BUCKET,
        "files": [{"table": table, "key": f"uploads/{GRAPH}/{path.name}"} for table, path in files.items()],
    }
    graph = f"{GRAPH}-{attempt}"
    with service.api() as client:
        created = client.post("/databases", json={"graph_id": graph, "schema": SCHEMA})
        assert created.status_code == 201, created.text
        started = time.perf_counter()
        response = client.post(f"/databases/{graph}/load", json=body)
        seconds = time.perf_counter() - started
        assert response.status_code == 200, response.text
        answered = response.json()
        counted = {}
        for table, text in COUNTS.items():
            row = query(client, graph, text)[0]
            counted[table] = (int(row[0]), float(row[1] or 0.0))
        size = client.get(f"/databases/{graph}").json()["size_bytes"]
        client.delete(f"/databases/{graph}")
    return {"seconds": seconds, "upload": uploaded, "answer": answered, "counts": counted, "size": size}


def run_row(work: Path, settings: Any, sample: int, fanout: int, *, in_memory: bool) -> dict[str, Any]:
    folder = work / ("row-memory" if in_memory else "row")
    folder.mkdir()
    database, conn = open_database(None if in_memory else folder / "graph.lbdb", settings)
    try:
        create_schema(conn)
        started = time.perf_counter()
        for i in range(sample):
            conn.execute(
                "CREATE (:Company {id: $id, name: $name, revenue: $revenue})",
                {"id": f"c{i}", "name": f"Company {i}", "revenue": i * 1.5},
            )
        node_seconds = time.perf_counter() - started
        rels = sample  # as many relationships as nodes, among the sample's nodes
        started = time.perf_counter()
        for k in range(rels):
            target = (k * 2_654_435_761 + 12345) % sample
            conn.execute(
                "MATCH (a:Company), (b:Company) WHERE a.id = $a AND b.id = $b "
                "CREATE (a)-[:Owns {share: $share}]->(b)",
                {"a": f"c{k // fanout % sample}", "b": f"c{target}", "share": (k % 100) / 100},
            )
        rel_seconds = time.perf_counter() - started
        counted = counts_in(conn)
    finally:
        conn.close()
        database.close()
    shutil.rmtree(folder)
    return {
        "nodes": sample,
        "rels": rels,
        "node_rate": sample / node_seconds,
        "rel_rate": rels / rel_seconds,
        "counts": counted,
    }


# -- --profile: the node's load path in this process, every phase timed ----------------------


class _Timed:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


def run_profile(work: Path, service: Stack, files: dict[str, Path], settings: Any) -> dict[str, float]:
    """`DatabaseHost.load` as the node runs it (its S3 client: `beatless.aws`'s settings), phases timed."""
    import boto3
    from botocore.config import Config

    from beatless.graphs.node import databases
    from beatless.graphs.node.databases import DatabaseHost, LoadFile
    from beatless.graphs.schema import GraphSchema

    timed = _Timed()

    aws = {k: v for k, v in service.env.items() if k.startswith("AWS_")}
    client = boto3.client(
        "s3",
        endpoint_url=aws["AWS_ENDPOINT_URL"],
        region_name=aws["AWS_DEFAULT_REGION"],
        aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
        config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"}),
    )

    class Conn:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def execute(self, text: str, *args: Any) -> Any:
            word = text.split()[0].upper()
            kind = {"COPY": "COPY", "MATCH": "table counts (MATCH count)", "CALL": "table listing (CALL)"}
            with timed.phase(kind.get(word, f"other ({word})")):
                return self.inner.execute(text, *args)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    class Host(DatabaseHost):
        @contextlib.contextmanager
        def _connection(self, graph_id: str, *, create: bool = False) -> Iterator[Any]:
            with super()._connection(graph_id, create=create) as conn:
                yield Conn(conn)

        def _check_columns(self, *args: Any, **kwargs: Any) -> None:
            with timed.phase("column check (scratch DB, LOAD FROM ... LIMIT 0)"):
                super()._check_columns(*args, **kwargs)

    original = databases._write_atomically

    def journal(path: Path, data: Any) -> None:
        with timed.phase("journal writes (fsync)"):
            original(path, data)

    from dataclasses import replace

    host = Host(replace(settings, data_dir=work / "profile"))
    host.create(GRAPH, GraphSchema.parse(SCHEMA))
    timed.seconds.clear()  # the load only
    items = [
        LoadFile(table=table, name=f"uploads/{GRAPH}/{path.name}", format="parquet", size=path.stat().st_size)
        for table, path in files.items()
    ]

    def fetch(item: LoadFile, path: Path) -> None:
        with timed.phase("S3 fetch (boto3 download_file from moto)"):
            client.download_file(BUCKET, item.name, str(path))

    databases._write_atomically = journal
    try:
        started = time.perf_counter()
        host.load(GRAPH, "profile-1", items, fetch)
        total = time.perf_counter() - started
    finally:
        databases._write_atomically = original
        host.close_all()
    timed.seconds["(total DatabaseHost.load)"] = total
    shutil.rmtree(work / "profile")
    return timed.seconds


# -- main ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--rels", type=int, default=5_000_000)
    parser.add_argument("--sample", type=int, default=2_000, help="nodes (and rels) the row-by-row way")
    parser.add_argument("--smoke", action="store_true", help="20,000 nodes, 100,000 rels, sample 200")
    parser.add_argument("--profile", action="store_true", help="also time the node's load phases")
    parser.add_argument("--repeat", type=int, default=3, help="raw and node runs, alternating (median)")
    parser.add_argument("--methods", default="raw,node,row,row-mem", help="subset of raw,node,row,row-mem")
    args = parser.parse_args()
    if args.smoke:
        args.nodes, args.rels, args.sample, args.repeat = 20_000, 100_000, 200, 1
    fanout = max(1, math.ceil(args.rels / args.nodes))
    methods = [m for m in args.methods.split(",") if m]

    work = Path(tempfile.mkdtemp(prefix="beatless-bench-load-"))
    results: dict[str, dict[str, Any]] = {}
    profile: dict[str, float] = {}
    try:
        started = time.perf_counter()
        files = {"Company": work / "companies.parquet", "Owns": work / "owns.parquet"}
        node_bytes = write_nodes(files["Company"], 0, args.nodes)
        rel_bytes = write_rels(
            files["Owns"], first_node=0, nodes=args.nodes, start=0, n=args.rels, fanout=fanout
        )
        log(
            f"generated {args.nodes:,} nodes ({node_bytes / 2**20:.1f} MiB Parquet) and {args.rels:,} "
            f"relationships ({rel_bytes / 2**20:.1f} MiB) in {time.perf_counter() - started:.1f} s"
        )
        with stack(work) as service:
            settings = node_settings(work / "unused", service.env)
            print(
                f"node settings (the node's defaults, also used for raw and row): buffer pool "
                f"{settings.buffer_pool_bytes / 2**20:.0f} MiB, threads {settings.threads}, "
                f"size cap {settings.max_db_size_bytes / 2**30:.0f} GiB"
            )
            runs: dict[str, list[dict[str, Any]]] = {}
            for attempt in range(args.repeat):
                for method in methods:
                    if method in ("row", "row-mem") and attempt > 0:
                        continue  # the naive way is slow and far off: once
                    log(f"{method} (run {attempt + 1}) ...")
                    if method == "raw":
                        result = run_raw(work, files, settings)
                    elif method == "node":
                        result = run_node(service, files, attempt)
                    elif method in ("row", "row-mem"):
                        in_memory = method == "row-mem"
                        result = run_row(work, settings, args.sample, fanout, in_memory=in_memory)
                    else:
                        raise SystemExit(f"unknown method {method}")
                    runs.setdefault(method, []).append(result)
                    if "seconds" in result:
                        log(f"{method} done: {result['seconds']:.1f} s")
                    else:
                        log(f"{method} done: {result['node_rate']:,.0f} and {result['rel_rate']:,.0f} rows/s")
            for method, done in runs.items():  # the median run of each (by its time)
                results[method] = {
                    **sorted(done, key=lambda r: r.get("seconds", 0))[(len(done) - 1) // 2],
                    "all": [r.get("seconds", 0) for r in done],
                    "upload": done[0].get("upload", 0.0),
                }
            if args.profile:
                log("profile: the node's load path in this process ...")
                profile = run_profile(work, service, files, settings)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report(args, results, profile)


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]], profile: dict[str, float]) -> int:
    total = args.nodes + args.rels
    want = {"Company": (args.nodes, expected_revenue(args.nodes)), "Owns": (args.rels, None)}
    wrong = 0

    def check(counted: dict[str, tuple[int, float]], expected: dict[str, tuple[int, float | None]]) -> str:
        nonlocal wrong
        ok = all(
            counted[t][0] == n and (s is None or math.isclose(counted[t][1], s, rel_tol=1e-9))
            for t, (n, s) in expected.items()
        )
        wrong += not ok
        text = ", ".join(f"{t} {counted[t][0]:,}" for t in counted)
        return f"{'ok' if ok else 'WRONG'}: {text}"

    print()
    print(f"{args.nodes:,} nodes + {args.rels:,} relationships = {total:,} rows; {load_average()}")
    print(f"{'method':<8}{'seconds':>10}{'rows/s':>13}  notes")
    print("-" * 100)
    if "raw" in results:
        r = results["raw"]
        steps = ", ".join(f"{t} {s:.1f} s" for t, s in r["steps"].items())
        print(
            f"{'raw':<8}{r['seconds']:>10.1f}{total / r['seconds']:>13,.0f}  COPY in this process ({steps}); "
            f"runs {_runs(r)}; "
            f"{r['size'] / 2**20:.0f} MiB on disk; {check(r['counts'], want)}"
        )
    if "node" in results:
        r = results["node"]
        answer = r["answer"]["rows"]
        counted_ok = answer == {"Company": args.nodes, "Owns": args.rels}
        wrong += not counted_ok
        print(
            f"{'node':<8}{r['seconds']:>10.1f}{total / r['seconds']:>13,.0f}  POST load -> 200, "
            f"runs {_runs(r)} (S3 upload before the first: {r['upload']:.1f} s, not counted); "
            f"{r['size'] / 2**20:.0f} MiB on disk; "
            f"answer rows {'ok' if counted_ok else 'WRONG'}; /query {check(r['counts'], want)}"
        )
    for method in ("row", "row-mem"):
        if method not in results:
            continue
        r = results[method]
        full = args.nodes / r["node_rate"] + args.rels / r["rel_rate"]
        r["seconds"] = full
        sample_want = {"Company": (r["nodes"], expected_revenue(r["nodes"])), "Owns": (r["rels"], None)}
        where = "on disk" if method == "row" else "in-memory database (no WAL fsync), reference only"
        print(
            f"{method:<8}{full:>10,.0f}{total / full:>13,.0f}  extrapolated from {r['nodes']:,} CREATE "
            f"({r['node_rate']:,.0f}/s) + {r['rels']:,} MATCH-CREATE ({r['rel_rate']:,.0f}/s), "
            f"auto-commit each, {where} ({full / 3600:.1f} h); sample {check(r['counts'], sample_want)}"
        )
    print()
    if "node" in results and "raw" in results:
        ratio = results["node"]["seconds"] / results["raw"]["seconds"]
        limit = GOALS["node_over_raw"]
        print(f"node / raw COPY: {ratio:.2f}x (goal <= {limit}x: {verdict(ratio <= limit)})")
    if "node" in results and "row" in results:
        ratio = results["row"]["seconds"] / results["node"]["seconds"]
        least = GOALS["row_over_node"]
        print(f"row-by-row / node: {ratio:,.0f}x (goal >= {least:.0f}x: {verdict(ratio >= least)})")
    if "node" in results and "row-mem" in results:
        ratio = results["row-mem"]["seconds"] / results["node"]["seconds"]
        print(f"row-by-row in memory / node: {ratio:,.0f}x (reference: the naive app's best case)")
    if profile:
        whole = profile.pop("(total DatabaseHost.load)")
        print()
        print(f"where the node's load spends its time (DatabaseHost.load in this process, {whole:.1f} s):")
        for name, seconds in sorted(profile.items(), key=lambda kv: -kv[1]):
            print(f"  {name:<55}{seconds:>8.2f} s{seconds / whole:>7.0%}")
        rest = whole - sum(profile.values())
        print(f"  {'rest (tables(), checks, staging clean-up)':<55}{rest:>8.2f} s{rest / whole:>7.0%}")
        print(f"  ({load_average()})")
    return 1 if wrong else 0


def _runs(result: dict[str, Any]) -> str:
    return ", ".join(f"{seconds:.1f}" for seconds in result["all"]) + " s"


if __name__ == "__main__":
    raise SystemExit(main())
