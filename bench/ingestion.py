"""Ingestion end to end (stage + validate + materialize) against the engine's raw COPY and
row-by-row CREATE; and validation alone with 1 % bad rows (rows/s, peak memory).

    .venv/bin/python bench/ingestion.py                 # 1,000,000 nodes, 5,000,000 relationships
    .venv/bin/python bench/ingestion.py --smoke         # 20,000 / 100,000, a few seconds
    .venv/bin/python bench/ingestion.py --validation    # only: validation with 1 % bad rows

The data is `bench/graph_common.py`'s (Parquet: `Company` with a STRING key, `Owns` with a
DOUBLE property). Ingestion runs the real operations in this process (`run_operation`:
the operations table and credits in a throwaway PostgreSQL, progress in a throwaway Redis,
S3 and DynamoDB in moto's server, a `beatless graph-node` process): `create_graph`, then
`stage_files` (the upload fetched from S3, validated in DuckDB, staged as clean Parquet)
and `materialize` (the node's atomic bulk load), each timed from call to return. The limit
is the engine's own `COPY FROM` of the same local files in this process with the node's
settings; row-by-row is `graph_bulk_load.py`'s (a sample, extrapolated). Goals: ingestion
<= 1.5x raw COPY, row-by-row >= 100x ingestion.

`--validation` runs `beatless.ingestion.validation` alone, in a child process (its own peak
RSS: VmHWM), over the same files with 1 % of the relationships made bad (half point
at a company that does not exist, half carry a share that is not a number, as CSV), and
prints rows/s and the peak RSS. Goal: peak <= 1 GB.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from graph_bulk_load import expected_revenue, run_raw, run_row
from graph_common import (
    BUCKET,
    SCHEMA,
    load_average,
    log,
    node_settings,
    operations,
    query,
    stack,
    verdict,
    write_nodes,
    write_rels,
)

GOALS = {"ingestion_over_raw": 1.5, "row_over_ingestion": 100.0, "validation_peak_mb": 1024}
GRAPH = "bench-ingest"


def run_ingestion(service: Any, files: dict[str, Path], work: Path) -> dict[str, Any]:
    from beatless.operations.catalogue import operation
    from beatless.operations.runtime import run_operation

    for table, path in files.items():
        service.s3.upload_file(str(path), BUCKET, f"uploads/{GRAPH}/{table}.parquet")
    with operations(service, work, GRAPH) as resources:
        run_operation(operation("create_graph"), {"graph_id": GRAPH, "schema": SCHEMA}, resources=resources)
        batch = {
            "graph_id": GRAPH,
            "batch_id": "b1",
            "files": [{"table": t, "key": f"uploads/{GRAPH}/{t}.parquet"} for t in files],
        }
        started = time.perf_counter()
        staged = run_operation(operation("stage_files"), batch, resources=resources)
        stage_seconds = time.perf_counter() - started
        assert staged.result["valid"], staged.result["problems"][:5]
        started = time.perf_counter()
        loaded = run_operation(
            operation("materialize"), {"graph_id": GRAPH, "batch_id": "b1"}, resources=resources
        )
        load_seconds = time.perf_counter() - started
    with service.api() as client:
        counted = {
            "Company": tuple(query(client, GRAPH, "MATCH (c:Company) RETURN count(*), sum(c.revenue)")[0]),
            "Owns": tuple(query(client, GRAPH, "MATCH ()-[o:Owns]->() RETURN count(*), sum(o.share)")[0]),
        }
    return {
        "seconds": stage_seconds + load_seconds,
        "stage": stage_seconds,
        "materialize": load_seconds,
        "rows": loaded.result["rows"],
        "counts": counted,
        "charged": staged.charged_micro + loaded.charged_micro,
    }


# -- validation alone -----------------------------------------------------------------------------


def make_bad(files: dict[str, Path], work: Path, share: float) -> tuple[dict[str, Path], int]:
    """The relationships as CSV with `share` of them bad: half dangling, half not a number."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    owns = pq.read_table(files["Owns"])
    every = max(2, round(1 / share))
    position = np.arange(owns.num_rows) % every
    dangling, not_a_number = position == 0, position == every // 2
    to = np.where(
        dangling,
        np.char.add(owns.column("to").to_numpy(zero_copy_only=False).astype(str), "-x"),
        owns.column("to").to_numpy(zero_copy_only=False),
    )
    shares = owns.column("share").to_numpy().astype(str)
    shares[not_a_number] = "n/a"
    table = pa.table(
        {"from": owns.column("from"), "to": pa.array(to.tolist()), "share": pa.array(shares.tolist())}
    )
    path = work / "owns-bad.csv"
    pacsv.write_csv(table, path)
    return {"Company": files["Company"], "Owns": path}, int(dangling.sum() + not_a_number.sum())


def validate_only(company: Path, owns: Path, out: Path) -> dict[str, Any]:
    """In this process: validate, report rows/s and the problems' counts (the child's job)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from beatless.graphs.schema import GraphSchema
    from beatless.ingestion.validation import StagedFile, Validation

    files = [
        StagedFile("Company", "companies.parquet", company, "parquet"),
        StagedFile("Owns", "owns-bad.csv", owns, "csv"),
    ]
    started = time.perf_counter()
    with Validation(GraphSchema.parse(SCHEMA), work_dir=out) as validation:
        report = validation.run(files, {})
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rows": sum(report.rows.values()),
        "counts": {k: v for k, v in report.counts.items() if v},
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: the high-water mark of its own memory, reset by
    exec — unlike getrusage's ru_maxrss, which a child inherits from the parent that forked it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def run_validation(files: dict[str, Path], work: Path) -> dict[str, Any]:
    bad_files, bad = make_bad(files, work, 0.01)
    out = work / "validation"
    out.mkdir()
    child = subprocess.run(
        [
            sys.executable,
            __file__,
            "--validate-child",
            str(bad_files["Company"]),
            str(bad_files["Owns"]),
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    result["bad_rows"] = bad
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--rels", type=int, default=5_000_000)
    parser.add_argument("--sample", type=int, default=2_000, help="nodes (and rels) the row-by-row way")
    parser.add_argument("--smoke", action="store_true", help="20,000 nodes, 100,000 rels, sample 200")
    parser.add_argument("--validation", action="store_true", help="only validation with 1 %% bad rows")
    parser.add_argument("--validate-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.validate_child:
        print(json.dumps(validate_only(*(Path(p) for p in args.validate_child))))
        return 0
    if args.smoke:
        args.nodes, args.rels, args.sample = 20_000, 100_000, 200
    fanout = max(1, math.ceil(args.rels / args.nodes))
    work = Path(tempfile.mkdtemp(prefix="beatless-bench-ingest-"))
    try:
        files = {"Company": work / "companies.parquet", "Owns": work / "owns.parquet"}
        write_nodes(files["Company"], 0, args.nodes)
        write_rels(files["Owns"], first_node=0, nodes=args.nodes, start=0, n=args.rels, fanout=fanout)
        log(f"generated {args.nodes:,} nodes and {args.rels:,} relationships")
        log("validation alone, 1 % bad rows (child process) ...")
        validation = run_validation(files, work)
        ingestion = raw = row = None
        if not args.validation:
            with stack(work) as service:
                settings = node_settings(work / "unused", service.env)
                log("raw COPY ...")
                raw = run_raw(work, files, settings)
                log("ingestion: stage_files + materialize ...")
                ingestion = run_ingestion(service, files, work)
                log("row by row (sample) ...")
                row = run_row(work, settings, args.sample, fanout, in_memory=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report(args, validation, ingestion, raw, row)


def report(
    args: argparse.Namespace,
    validation: dict[str, Any],
    ingestion: dict[str, Any] | None,
    raw: dict[str, Any] | None,
    row: dict[str, Any] | None,
) -> int:
    wrong = 0
    print()
    rows = args.nodes + args.rels
    print(f"data: {args.nodes:,} nodes + {args.rels:,} relationships ({load_average()})")
    vrate = validation["rows"] / validation["seconds"]
    peak_ok = validation["peak_rss_mb"] <= GOALS["validation_peak_mb"]
    print(
        f"validation alone, 1 % bad ({validation['bad_rows']:,} rows): {validation['seconds']:.1f} s, "
        f"{vrate:,.0f} rows/s, found {validation['counts']}, peak RSS {validation['peak_rss_mb']:,.0f} MB "
        f"(goal <= {GOALS['validation_peak_mb']} MB: {verdict(peak_ok)})"
    )
    found = sum(validation["counts"].values())
    if found != validation["bad_rows"]:
        wrong += 1
        print(f"check: problems found {found:,} = bad rows {validation['bad_rows']:,}: WRONG")
    else:
        print(f"check: problems found = bad rows ({found:,}): ok")
    if ingestion is None or raw is None or row is None:
        return 1 if wrong else 0
    row_seconds = args.nodes / row["node_rate"] + args.rels / row["rel_rate"]
    over_raw = ingestion["seconds"] / raw["seconds"]
    row_over = row_seconds / ingestion["seconds"]
    print(f"{'method':<12}{'seconds':>10}{'rows/s':>14}  notes")
    print("-" * 90)
    print(f"{'raw COPY':<12}{raw['seconds']:>10.1f}{rows / raw['seconds']:>14,.0f}  the engine's COPY FROM")
    print(
        f"{'ingestion':<12}{ingestion['seconds']:>10.1f}{rows / ingestion['seconds']:>14,.0f}  "
        f"stage_files {ingestion['stage']:.1f} s (fetch, DuckDB validation, staging) + "
        f"materialize {ingestion['materialize']:.1f} s"
    )
    print(
        f"{'row by row':<12}{row_seconds:>10.0f}{rows / row_seconds:>14,.0f}  extrapolated from "
        f"{row['nodes']:,} nodes at {row['node_rate']:,.0f}/s and {row['rels']:,} rels "
        f"at {row['rel_rate']:,.0f}/s"
    )
    print()
    limit, floor = GOALS["ingestion_over_raw"], GOALS["row_over_ingestion"]
    print(f"ingestion / raw COPY: {over_raw:.2f}x (goal <= {limit}x: {verdict(over_raw <= limit)})")
    print(f"row by row / ingestion: {row_over:,.0f}x (goal >= {floor:.0f}x: {verdict(row_over >= floor)})")
    expected = {"Company": (args.nodes, expected_revenue(args.nodes))}
    checks = {
        "rows in the graph = rows in the files": ingestion["rows"]
        == {"Company": args.nodes, "Owns": args.rels},
        "companies and revenue as generated": ingestion["counts"]["Company"][0] == expected["Company"][0]
        and math.isclose(ingestion["counts"]["Company"][1], expected["Company"][1], rel_tol=1e-9),
        "relationships as generated": ingestion["counts"]["Owns"][0] == args.rels,
    }
    for name, ok in checks.items():
        wrong += not ok
        print(f"check: {name}: {'ok' if ok else 'WRONG'}")
    print(f"charged: {ingestion['charged'] / 1e6:g} credits for stage_files + materialize")
    return 1 if wrong else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    raise SystemExit(main())
