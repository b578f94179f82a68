"""Backup and restore of a ~1 GB graph through the graph node, against the compressor alone.

    .venv/bin/python bench/graph_backup.py                   # about 1 GB on disk
    .venv/bin/python bench/graph_backup.py --smoke           # about 20 MB, a few seconds
    .venv/bin/python bench/graph_backup.py --target-mb 2048

Builds the graph through the node (moto's server for S3, a `beatless graph-node` process,
both on free ports, the node's default settings): loads of --chunk-nodes companies and
5x as many relationships each (`bench/graph_common.py`: Parquet uploaded to S3, then
`POST /databases/{id}/load`), until `GET /databases/{id}` reports at least --target-mb.
Then:

1. backup  — `POST /databases/{id}/backup`, request to response: CHECKPOINT, the archive
             packed (`beatless.graphs.node.backup`: sparse extents, zstd, SHA-256) and
             uploaded to S3;
2. compress — the limit: the same file's extents read and compressed by `zstandard`
             alone, in this process, with the node's settings (`backup.LEVEL`, threads=0,
             reads of `backup.CHUNK`), the output discarded;
3. restore — `POST /databases/{id}/restore` of that archive into a new graph, request to
             response: one streamed GET from S3, read + hashed, decompressed and written
             (sparse, O_DIRECT where it can, fsync) on three overlapping threads, opened;
4. decompress — the limit: the node's archive (fetched from S3 beforehand, untimed)
             decompressed alone in this process, the output discarded.

Throughput is the database file's data bytes (its extents: what is read, compressed and
written back; `data_bytes` in the backup's answer) per second of wall time. The bytes on
disk (`size_bytes`, allocated blocks of the file and its WAL) are printed beside. Goal:
backup and restore each >= 70 % of the compressor's own throughput. Checks: the S3
object's SHA-256 equals the answer's and its metadata, and the restored graph answers
the same queries as the original.

The steps of each are also timed in this process on the same file (pack, S3 upload and
download with boto3 — and one streamed GET, for reference: moto reads the whole object for
every ranged GET of a download_file — unpack with its checksum pass and fsync, and the
same bytes written through the page cache and synced, for comparison) to show where the
node's time goes. With them the bench prints what the S3 stand-in allows: a backup must
hand the whole archive to S3, so even one that overlapped compression and upload
perfectly could not beat max(compress alone, the upload alone); that ceiling, as a share
of the compressor, is printed beside the goal.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from graph_common import (
    BUCKET,
    SCHEMA,
    Stack,
    load_average,
    log,
    query,
    stack,
    verdict,
    write_nodes,
    write_rels,
)

GOAL_SHARE = 0.70
UPLOAD_STEP = "backup: S3 upload_file (boto3 -> moto)"
GRAPH = "bench-backup"
RESTORED = "bench-restored"
FANOUT = 5
QUERIES = [
    "MATCH (c:Company) RETURN count(*), sum(c.revenue), min(c.id), max(c.name)",
    "MATCH ()-[o:Owns]->() RETURN count(*), sum(o.share)",
    "MATCH (a:Company)-[o:Owns]->(b:Company) WHERE a.id = 'c12345' "
    "RETURN b.id, o.share ORDER BY b.id, o.share",
    "MATCH (a:Company)<-[:Owns]-(b:Company) WHERE a.id = 'c777' RETURN count(b)",
    "MATCH (c:Company) WHERE c.revenue > 1000000.0 RETURN count(*)",
]


class _Sink:
    """Counts what is written and discards it."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.written += len(data)
        return len(data)


def build(service: Stack, work: Path, target: int, chunk_nodes: int) -> dict[str, Any]:
    started = time.perf_counter()
    with service.api() as client:
        created = client.post("/databases", json={"graph_id": GRAPH, "schema": SCHEMA})
        assert created.status_code == 201, created.text
        loads = size = 0
        while size < target:
            first = loads * chunk_nodes
            nodes_file, rels_file = work / f"companies-{loads}.parquet", work / f"owns-{loads}.parquet"
            write_nodes(nodes_file, first, chunk_nodes)
            rels = chunk_nodes * FANOUT
            write_rels(
                rels_file, first_node=first, nodes=chunk_nodes, start=first * FANOUT, n=rels, fanout=FANOUT
            )
            files = []
            for table, path in (("Company", nodes_file), ("Owns", rels_file)):
                key = f"uploads/{GRAPH}/{path.name}"
                service.s3.upload_file(str(path), BUCKET, key)
                path.unlink()
                files.append({"table": table, "key": key})
            body = {"load_id": f"build-{loads}", "bucket": BUCKET, "files": files}
            loaded = client.post(f"/databases/{GRAPH}/load", json=body)
            assert loaded.status_code == 200, loaded.text
            for item in files:
                service.s3.delete_object(Bucket=BUCKET, Key=item["key"])
            loads += 1
            size = client.get(f"/databases/{GRAPH}").json()["size_bytes"]
            log(f"  load {loads}: {loaded.json()['rows']}, {size / 2**20:,.0f} MiB on disk")
    return {"loads": loads, "seconds": time.perf_counter() - started, "size": size}


def answers(client: Any, graph_id: str) -> list[list[list[Any]]]:
    return [query(client, graph_id, text) for text in QUERIES]


def sha256_of(path: Path) -> str:
    from beatless.graphs.node import backup

    return backup.sha256_of(path)


def compare(before: list[Any], after: list[Any]) -> tuple[bool, list[str]]:
    """Equal, floats within 1e-12 relative (a sum over threads adds in any order); the differences."""
    differences = []

    def close(a: Any, b: Any) -> bool:
        if isinstance(a, float) or isinstance(b, float):
            return (
                isinstance(a, int | float)
                and isinstance(b, int | float)
                and math.isclose(a, b, rel_tol=1e-12)
            )
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
        return bool(a == b)

    for text, a, b in zip(QUERIES, before, after, strict=True):
        if a != b:
            differences.append(f"{'close' if close(a, b) else 'DIFFERENT'}: {text}: {a[:3]} vs {b[:3]}")
    return all(close(a, b) for a, b in zip(before, after, strict=True)), differences


def compress_alone(path: Path) -> dict[str, Any]:
    """The node's compressor on the file's extents, output discarded (backup.pack without the rest)."""
    import zstandard

    from beatless.graphs.node import backup

    regions = backup.extents(path)
    sink = _Sink()
    started = time.perf_counter()
    compressor = zstandard.ZstdCompressor(level=backup.LEVEL, threads=0)
    read = 0
    with path.open("rb") as handle, compressor.stream_writer(sink, closefd=False) as stream:  # type: ignore[arg-type]
        for offset, length in regions:
            handle.seek(offset)
            left = length
            while left:
                chunk = handle.read(min(backup.CHUNK, left))
                stream.write(chunk)
                left -= len(chunk)
                read += len(chunk)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "data_bytes": read, "compressed": sink.written, "extents": len(regions)}


def decompress_alone(archive: Path) -> dict[str, Any]:
    import zstandard

    from beatless.graphs.node import backup

    sink = 0
    started = time.perf_counter()
    with archive.open("rb") as raw:
        reader = zstandard.ZstdDecompressor().stream_reader(raw)
        while chunk := reader.read(backup.CHUNK):
            sink += len(chunk)
    return {"seconds": time.perf_counter() - started, "output": sink}


def _get_streamed(s3: Any, key: str, target: Path) -> None:
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"]
    with target.open("wb") as out:
        shutil.copyfileobj(body, out, 8 * 2**20)


def _write_synced(source: Path, target: Path) -> None:
    with source.open("rb") as handle, target.open("wb") as out:
        shutil.copyfileobj(handle, out, 4 * 2**20)
        out.flush()
        os.fsync(out.fileno())


def steps_in_process(service: Stack, work: Path, source: Path) -> dict[str, float]:
    """backup.pack / unpack and the S3 transfers on the same file in this process, each timed."""
    from beatless.graphs.node import backup

    archive, restored, fetched = work / "steps.lbbk", work / "steps.restored", work / "steps.fetched"
    timed: dict[str, float] = {}

    def step(name: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = call(*args, **kwargs)
        timed[name] = time.perf_counter() - started
        return result

    packed = step("backup: pack() (read, compress, SHA-256, write archive)", backup.pack, source, archive)
    step(UPLOAD_STEP, service.s3.upload_file, str(archive), BUCKET, "steps.lbbk")
    step(
        "restore: S3 download_file (ranged GETs: moto reads all of it per GET)",
        service.s3.download_file,
        BUCKET,
        "steps.lbbk",
        str(fetched),
    )
    streamed = work / "steps.streamed"
    step(
        "restore: S3 get_object streamed, one GET (reference)",
        _get_streamed,
        service.s3,
        "steps.lbbk",
        streamed,
    )
    streamed.unlink()
    step(
        "restore: unpack() (SHA-256 pass, decompress, write sparse, fsync)",
        backup.unpack,
        fetched,
        restored,
        expected_sha256=packed.sha256,
    )
    step("  of which the SHA-256 pass: sha256_of(archive)", backup.sha256_of, fetched)
    copy = work / "steps.copy"
    step("page cache: the same bytes written buffered + fsync", _write_synced, source, copy)
    copy.unlink()
    service.s3.delete_object(Bucket=BUCKET, Key="steps.lbbk")
    for path in (archive, restored, fetched):
        path.unlink()
    return timed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target-mb", type=int, default=1024, help="database size on disk to build (MiB)")
    parser.add_argument("--chunk-nodes", type=int, default=1_000_000, help="companies per load (5x rels)")
    parser.add_argument("--smoke", action="store_true", help="--target-mb 20 --chunk-nodes 50000")
    parser.add_argument("--no-steps", action="store_true", help="skip the in-process step timings")
    args = parser.parse_args()
    if args.smoke:
        args.target_mb, args.chunk_nodes = 20, 50_000

    work = Path(tempfile.mkdtemp(prefix="beatless-bench-backup-"))
    try:
        with stack(work) as service:
            log(f"building about {args.target_mb:,} MiB through the node ...")
            built = build(service, work, args.target_mb * 2**20, args.chunk_nodes)
            with service.api() as client:
                before = answers(client, GRAPH)
                log("backup ...")
                started = time.perf_counter()
                response = client.post(
                    f"/databases/{GRAPH}/backup", json={"bucket": BUCKET, "key": "b/1.lbbk"}
                )
                backup_seconds = time.perf_counter() - started
                assert response.status_code == 200, response.text
                backed = response.json()
                on_disk = client.get(f"/databases/{GRAPH}").json()["size_bytes"]
                source = service.node.data_dir / GRAPH / "graph.lbdb"
                log("compressor alone ...")
                compressed = compress_alone(source)
                archive = work / "node.lbbk"
                stored = service.s3.get_object(Bucket=BUCKET, Key="b/1.lbbk")
                with archive.open("wb") as out:
                    shutil.copyfileobj(stored["Body"], out, 16 * 2**20)
                digest = sha256_of(archive)
                log("restore ...")
                started = time.perf_counter()
                response = client.post(
                    f"/databases/{RESTORED}/restore", json={"bucket": BUCKET, "key": "b/1.lbbk"}
                )
                restore_seconds = time.perf_counter() - started
                assert response.status_code == 200, response.text
                restored = response.json()
                log("decompressor alone ...")
                decompressed = decompress_alone(archive)
                after = answers(client, RESTORED)
                restored_disk = client.get(f"/databases/{RESTORED}").json()["size_bytes"]
                archive.unlink()
            steps = {} if args.no_steps else steps_in_process(service, work, source)
            log("done")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    same, differences = compare(before, after)
    exact = before == after
    same_note = "" if exact or not same else " (floats within 1e-12 relative: parallel sums)"
    data = backed["data_bytes"]
    mb = data / 1e6
    checks = {
        "S3 object SHA-256 = answer = metadata": digest == backed["sha256"] == stored["Metadata"]["sha256"],
        "restore answer's sha256 = backup's": restored["sha256"] == backed["sha256"],
        "restored size = logical size": restored["size_bytes"] == backed["logical_bytes"],
        f"restored graph answers the {len(QUERIES)} queries as the original{same_note}": same,
        "compressor alone read the same bytes": compressed["data_bytes"] == data,
        "decompressor alone gave the same bytes": decompressed["output"] >= data,
    }
    rates = {
        "backup": mb / backup_seconds,
        "compress": mb / compressed["seconds"],
        "restore": mb / restore_seconds,
        "decompress": mb / decompressed["seconds"],
    }
    print()
    print(
        f"graph: {built['loads']} loads of {args.chunk_nodes:,} companies + {args.chunk_nodes * FANOUT:,} "
        f"relationships through the node ({built['seconds']:.0f} s); before: {before[0][0][0]:,} companies, "
        f"{before[1][0][0]:,} relationships"
    )
    print(
        f"size basis: data bytes (the file's extents) {data / 2**20:,.1f} MiB = {mb:,.1f} MB; on disk "
        f"{on_disk / 2**20:,.1f} MiB (allocated blocks); logical (with holes) "
        f"{backed['logical_bytes'] / 2**20:,.1f} MiB; archive {backed['stored_bytes'] / 2**20:,.1f} MiB "
        f"(ratio {data / backed['stored_bytes']:.2f}); restored on disk {restored_disk / 2**20:,.1f} MiB"
    )
    print(f"zstandard level {_level()}, threads=0 (the node's settings); {load_average()}")
    print()
    print(f"{'step':<12}{'seconds':>10}{'MB/s':>10}  notes")
    print("-" * 96)
    seconds = {
        "backup": backup_seconds,
        "compress": compressed["seconds"],
        "restore": restore_seconds,
        "decompress": decompressed["seconds"],
    }
    notes = {
        "backup": "POST backup -> 200 (CHECKPOINT, pack, S3 upload)",
        "compress": f"zstandard alone, {compressed['extents']} extents, output discarded "
        f"({compressed['compressed'] / 2**20:,.1f} MiB)",
        "restore": "POST restore -> 200 (one S3 GET: hash, decompress, write, fsync; open)",
        "decompress": "zstandard alone, the node's archive, output discarded",
    }
    for name, note in notes.items():
        print(f"{name:<12}{seconds[name]:>10.2f}{rates[name]:>10.0f}  {note}")
    print()
    for name, limit in (("backup", "compress"), ("restore", "decompress")):
        share = rates[name] / rates[limit]
        print(
            f"{name} / {limit} alone: {share:.0%} (goal >= {GOAL_SHARE:.0%}: {verdict(share >= GOAL_SHARE)})"
        )
    wrong = 0
    for name, ok in checks.items():
        wrong += not ok
        print(f"check: {name}: {'ok' if ok else 'WRONG'}")
    for difference in differences:
        print(f"  {difference}")
    if steps:
        print()
        print("the same steps in this process on the same file (where the node's time goes; MB/s of data):")
        for name, seconds in steps.items():
            print(f"  {name:<70}{seconds:>8.2f} s{mb / seconds:>8.0f} MB/s")
        print(f"  ({load_average()})")
        upload = steps[UPLOAD_STEP]
        ceiling = compressed["seconds"] / max(compressed["seconds"], upload)
        print(
            f"S3 stand-in: the archive's upload alone took {upload:.2f} s vs {compressed['seconds']:.2f} s "
            f"to compress it: a backup here can reach at most {ceiling:.0%} of the compressor, even "
            f"with compression and upload overlapped perfectly"
        )
    return 1 if wrong else 0


def _level() -> int:
    from beatless.graphs.node import backup

    return backup.LEVEL


if __name__ == "__main__":
    raise SystemExit(main())
