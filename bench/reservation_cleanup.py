"""credit_reservation_cleanup against the naive loop and the plain statement.

    .venv/bin/python bench/reservation_cleanup.py                  # the full N (5M holds, 1M due)
    .venv/bin/python bench/reservation_cleanup.py --reservations 200000 --expired 40000 --accounts 4000

Builds one database with a throwaway PostgreSQL (`beatless.local.servers`):
100,000 graph accounts (10 graphs per user), one allocation each, and
5,000,000 holds created over 90 days — 1,000,000 still `held` with
`expires_at` at or before the cutoff (due: a cleanup backlog), 1,000,000 held
and not yet due, 3,000,000 already committed, released or expired — then
`VACUUM ANALYZE`. Every method then runs on a fresh copy of that database
(`CREATE DATABASE ... TEMPLATE`) in its own child process:

1. job     — the job's core, `release_expired_holds`, exactly as the Lambda runs it
             (chunks of CHUNK_SIZE, keyset pagination, FOR UPDATE SKIP LOCKED);
2. loop    — the old Celery task's style, one hold per transaction: BEGIN; select
             one due hold (the earliest, FOR UPDATE); UPDATE it; COMMIT (the
             triggers do the rest, as the job's statement gets them too). Only a
             sample (--loop-sample) is timed and its rate extrapolated to all due
             holds — said in the output (generous: the loop slows down as it goes);
3. naive   — chunks without keyset pagination: every chunk re-reads the held
             index from its start, over the entries the previous chunks made dead;
4. plain   — one UPDATE of every due hold: the same effect in one statement
             (triggers on) — this machine's limit;
5. bare    — the same UPDATE with triggers off (credit_reservations_held left
             stale): the floor of rewriting the rows, for reference only.

After each method it checks the effect: no due hold left held (the loop: its
sample), every held amount equal to the sum of its holds, balances equal to the
ledger. It prints releases per second, the ratios and the peak RSS of the job's
process. Goals: >= 100,000 releases/s, >= 60 % of the plain statement's rate,
>= 100x the loop, peak memory <= 256 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

CUTOFF = datetime(2026, 11, 23, 9, 15, tzinfo=UTC)
GOALS = {"rate": 100_000, "of_plain": 0.60, "of_loop": 100.0, "rss_mb": 256}
METHODS = ("job", "loop", "naive", "plain", "bare")

LOAD_HOLDS = """
INSERT INTO credit_reservations
    (account_id, operation_id, amount_micro, status, created_at, expires_at, settled_at, consumed_micro)
SELECT account_id, 'op-' || i, amount, status, expires_at - interval '10 minutes', expires_at,
       CASE WHEN status = 'held' THEN NULL ELSE expires_at - interval '5 minutes' END,
       CASE WHEN status = 'committed' THEN amount / 2 END
FROM (
    SELECT i,
           1 + (hashint4(i) & 2147483647) %% %(accounts)s AS account_id,
           1000 + (hashint4(i + 7) & 2147483647) %% 1000000 AS amount,
           CASE WHEN i %% %(every)s < %(due_share)s THEN 'held'
                WHEN i %% %(every)s < %(due_share)s + %(live_share)s THEN 'held-live'
                ELSE (ARRAY['committed', 'released', 'expired'])[1 + i %% 3] END AS kind,
           %(cutoff)s::timestamptz - interval '90 days' * ((%(total)s - i)::float8 / %(total)s) AS due_at
    FROM generate_series(%(first)s::int, %(last)s::int) AS i
) AS g,
LATERAL (SELECT CASE WHEN kind = 'held-live' THEN 'held' ELSE kind END AS status,
                CASE WHEN kind = 'held-live'
                     THEN %(cutoff)s::timestamptz + interval '1 second' + (i %% 86400) * interval '1 second'
                     ELSE due_at END AS expires_at) AS s
"""


def tuned_server(shared_buffers: str) -> Any:
    """A throwaway server like the tests' (fsync off), with `shared_buffers` raised
    from the default 128 MB to what a database server of this size would get."""
    from beatless.local.servers import PostgresServer

    server = PostgresServer()
    server.start()
    with __import__("psycopg").connect(server.dsn, autocommit=True) as admin:
        admin.execute(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}'")
        admin.execute("ALTER SYSTEM SET max_wal_size = '4GB'")
    server._run([
        str(server.bindir / "pg_ctl"), "-D", str(server.data), "-l", str(server.base / "postgres.log"),
        "-w", "-t", "60", "restart",
    ])  # fmt: skip
    return server


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def build(server: Any, name: str, args: argparse.Namespace) -> None:
    import psycopg

    from beatless.db import migrate

    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(server.dsn_for(name), autocommit=True) as conn:
        migrate(conn)
        conn.execute("SET maintenance_work_mem = '512MB'")
        users = max(1, args.accounts // 10)
        conn.execute(
            "INSERT INTO users (id) SELECT 'user-' || u FROM generate_series(1, %s::int) u", (users,)
        )
        conn.execute(
            "INSERT INTO graphs (id, owner_id, created_at) SELECT 'graph-' || g, 'user-' || (1 + g %% %s), "
            "%s::timestamptz - interval '1 year' FROM generate_series(1, %s::int) g",
            (users, CUTOFF, args.accounts),
        )
        conn.execute(
            "INSERT INTO graph_tier_history (graph_id, effective_from, tier) "
            "SELECT id, created_at, (ARRAY['standard', 'large', 'xlarge'])[1 + abs(hashtext(id) % 3)] "
            "FROM graphs"
        )
        conn.execute("INSERT INTO credit_accounts (graph_id) SELECT id FROM graphs ORDER BY created_at, id")
        conn.execute(
            "INSERT INTO credit_ledger (account_id, kind, amount_micro, idempotency_key) "
            "SELECT id, 'allocation', 1000000000000, 'seed:' || id FROM credit_accounts"
        )
        # Shares per block of 100 holds: due, live (held, not due), settled.
        every = 100
        due_share = round(every * args.expired / args.reservations)
        live_share = min(every - due_share, due_share)
        step = 500_000
        for first in range(1, args.reservations + 1, step):
            last = min(args.reservations, first + step - 1)
            conn.execute(
                LOAD_HOLDS,
                {
                    "accounts": args.accounts,
                    "every": every,
                    "due_share": due_share,
                    "live_share": live_share,
                    "cutoff": CUTOFF,
                    "total": args.reservations,
                    "first": first,
                    "last": last,
                },
            )
            log(f"  loaded holds {first:,}..{last:,}")
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


def census(dsn: str) -> dict[str, Any]:
    import psycopg

    from beatless.credits import mismatches

    with psycopg.connect(dsn, autocommit=True) as conn:
        due = conn.execute(  # by status (a full scan: no index on status), not by the held table
            "SELECT count(*) FROM credit_reservations WHERE status = 'held' AND expires_at <= %s", (CUTOFF,)
        ).fetchone()[0]
        counts = dict(
            conn.execute("SELECT status, count(*) FROM credit_reservations GROUP BY status").fetchall()
        )
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
        return {"due": due, "statuses": counts, "mismatches": len(mismatches(conn)), "size": size}


# ---------------------------------------------------------------------------
# Child processes: one method each, on its own copy; they print one JSON line.
# ---------------------------------------------------------------------------


def child(method: str, dsn: str, loop_sample: int, chunk_size: int) -> None:
    import psycopg

    started = time.perf_counter()
    released = 0
    extra: dict[str, Any] = {}
    if method == "job":
        from functools import partial

        from beatless.credits.holds_cleanup import release_expired_holds
        from beatless.jobs import job
        from beatless.jobs.resources import Resources
        from beatless.jobs.runtime import run_job

        # The job's own runtime, as the Lambda runs it (one connection, the database clock,
        # chunks under a deadline).
        resources = Resources({"DATABASE_URL": dsn})
        work = partial(release_expired_holds, chunk_size=chunk_size)
        event = {"scheduled_time": CUTOFF.isoformat()}
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the run's EMF line
            summary = run_job(job("credit_reservation_cleanup"), event, None, work, resources=resources)
        released = summary["counts"]["released"]
        extra = {"chunks": summary["chunks"], "remaining": summary["remaining"]}
    elif method == "loop":
        with psycopg.connect(dsn, autocommit=True) as conn:
            started = time.perf_counter()
            marks: list[float] = []
            while released < loop_sample:
                with conn.transaction():
                    row = conn.execute(
                        "SELECT r.id FROM credit_reservations_held h "
                        "JOIN credit_reservations r ON r.id = h.reservation_id "
                        "WHERE h.expires_at <= %s AND r.status = 'held' "
                        "ORDER BY h.expires_at, h.reservation_id LIMIT 1 FOR UPDATE OF r",
                        (CUTOFF,),
                    ).fetchone()
                    if row is None:
                        break
                    conn.execute(
                        "UPDATE credit_reservations SET status = 'expired', settled_at = now() WHERE id = %s",
                        (row[0],),
                    )
                released += 1
                if released % max(1, loop_sample // 4) == 0:
                    marks.append(time.perf_counter() - started)
        quarter = max(1, loop_sample // 4)
        spans = [b - a for a, b in zip([0.0, *marks], marks, strict=False)]
        extra = {"quarter_rates": [round(quarter / span) for span in spans if span > 0]}
    elif method == "naive":
        with psycopg.connect(dsn, autocommit=True) as conn:
            while True:
                with conn.transaction():
                    n = conn.execute(
                        "WITH picked AS (SELECT reservation_id AS id FROM credit_reservations_held "
                        "WHERE expires_at <= %s ORDER BY expires_at, reservation_id LIMIT %s "
                        "FOR UPDATE SKIP LOCKED) "
                        "UPDATE credit_reservations SET status = 'expired', settled_at = now() "
                        "WHERE id = ANY (ARRAY(SELECT id FROM picked)) AND status = 'held'",
                        (CUTOFF, chunk_size),
                    ).rowcount
                released += n
                if n < chunk_size:
                    break
    elif method in ("plain", "bare"):
        with psycopg.connect(dsn, autocommit=True) as conn:
            if method == "bare":
                conn.execute("SET session_replication_role = replica")  # triggers off
            started = time.perf_counter()
            released = conn.execute(
                "UPDATE credit_reservations r SET status = 'expired', settled_at = now() "
                "FROM credit_reservations_held h "
                "WHERE h.reservation_id = r.id AND h.expires_at <= %s AND r.status = 'held'",
                (CUTOFF,),
            ).rowcount
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"released": released, "seconds": seconds, "rss_mb": rss_mb, **extra}))


def run_method(server: Any, source: str, method: str, args: argparse.Namespace) -> dict[str, Any]:
    import psycopg

    copy = f"bench_{method}"
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{copy}"')
        started = time.perf_counter()
        admin.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{source}"')
        copied = time.perf_counter() - started
    dsn = server.dsn_for(copy)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        # The same start for every method: tables and indexes read once (in shared buffers).
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        conn.execute(
            "SELECT pg_prewarm(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')"
        )
    timed_dsn = dsn
    if args.proxy_port:  # the timed client reaches the server through the latency proxy
        timed_dsn = dsn.replace(f":{server.port}/", f":{args.proxy_port}/")
    command = [
        sys.executable, __file__, "--child", method, timed_dsn, str(args.loop_sample), str(args.chunk_size)
    ]  # fmt: skip
    snapshot = None
    if args.open_snapshot:  # another session's old snapshot: dead entries cannot be marked killed
        snapshot = psycopg.connect(dsn)
        snapshot.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        snapshot.execute("SELECT count(*) FROM users")
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    finally:
        if snapshot is not None:
            snapshot.close()
    if done.returncode != 0:
        raise SystemExit(f"{method} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["rate"] = result["released"] / result["seconds"] if result["seconds"] else 0.0
    result["check"] = census(dsn)
    result["copy_seconds"] = copied
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{copy}"')
    return result


def round_trip_ms(dsn: str, port: int, server_port: int) -> float:
    """Median time of `SELECT 1` through `port` (the proxy, or the server itself)."""
    import statistics

    import psycopg

    with psycopg.connect(dsn.replace(f":{server_port}/", f":{port}/"), autocommit=True) as conn:
        samples = []
        for _ in range(300):
            started = time.perf_counter()
            conn.execute("SELECT 1")
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reservations", type=int, default=5_000_000)
    parser.add_argument("--expired", type=int, default=1_000_000, help="holds due at the cutoff")
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--loop-sample", type=int, default=20_000, help="holds the loop releases (timed)")
    parser.add_argument("--chunk-size", type=int, default=0, help="default: the job's CHUNK_SIZE")
    parser.add_argument("--shared-buffers", default="2GB", help="PostgreSQL shared_buffers (default 2GB)")
    parser.add_argument(
        "--open-snapshot",
        action="store_true",
        help="hold a REPEATABLE READ snapshot open in another session while each method runs",
    )
    parser.add_argument(
        "--rtt-ms",
        type=float,
        default=0.0,
        help="add this round-trip time between the timed client and the server (bench/latency_proxy.py)",
    )
    parser.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, dsn, sample, chunk = args.child
        child(method, dsn, int(sample), int(chunk))
        return 0

    from beatless.credits.holds_cleanup import CHUNK_SIZE

    args.chunk_size = args.chunk_size or CHUNK_SIZE
    methods = [m for m in args.methods.split(",") if m]
    print(
        f"{args.reservations:,} holds ({args.expired:,} due at {CUTOFF:%Y-%m-%d %H:%M}Z), "
        f"{args.accounts:,} accounts; chunk size {args.chunk_size:,}; "
        f"{'an old snapshot held open during each method; ' if args.open_snapshot else ''}"
        f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs"
    )
    server = tuned_server(args.shared_buffers)
    try:
        with __import__("psycopg").connect(server.dsn, autocommit=True) as admin:
            version = admin.execute("SHOW server_version").fetchone()[0]
            buffers = admin.execute("SHOW shared_buffers").fetchone()[0]
        print(f"PostgreSQL {version} (throwaway server: fsync off, shared_buffers {buffers})")
        started = time.perf_counter()
        build(server, "bench_source", args)
        before = census(server.dsn_for("bench_source"))
        log(f"built in {time.perf_counter() - started:.0f} s: {before}")
        results: dict[str, dict[str, Any]] = {}
        with contextlib.ExitStack() as stack:
            args.proxy_port = 0
            if args.rtt_ms > 0:
                from latency_proxy import LatencyProxy

                proxy = stack.enter_context(LatencyProxy("127.0.0.1", server.port, args.rtt_ms).running())
                args.proxy_port = proxy.port
                print(
                    f"timed clients connect through a proxy adding {args.rtt_ms:g} ms per round trip: "
                    f"measured round trip {round_trip_ms(server.dsn, proxy.port, server.port):.2f} ms "
                    f"(direct {round_trip_ms(server.dsn, server.port, server.port):.2f} ms)"
                )
            for method in methods:
                log(f"{method} ...")
                results[method] = run_method(server, "bench_source", method, args)
                log(f"{method}: {json.dumps(results[method])}")

    finally:
        server.close()
    due = before["due"]
    wrong = 0
    print()
    print(f"{'method':<8}{'released':>12}{'seconds':>10}{'releases/s':>14}{'peak RSS':>11}  check")
    print("-" * 92)
    for method, r in results.items():
        check = r["check"]
        expected_left = due - r["released"]
        ok = check["due"] == expected_left and (check["mismatches"] == 0 or method == "bare")
        note = f"left held+due {check['due']:,}, mismatching accounts {check['mismatches']}"
        if method == "loop":
            note += (
                f"; timed on a sample of {r['released']:,}, rate extrapolated to {due:,} "
                f"(releases/s per quarter of the sample: {', '.join(f'{q:,}' for q in r['quarter_rates'])})"
            )
        print(
            f"{method:<8}{r['released']:>12,}{r['seconds']:>10.2f}{r['rate']:>14,.0f}{r['rss_mb']:>8.0f} MB  "
            f"{'ok' if ok else 'WRONG'}: {note}"
        )
        wrong += not ok
    if "job" in results:
        job = results["job"]
        print()
        met = verdict(job["rate"] >= GOALS["rate"])
        print(f"job: {job['rate']:,.0f} releases/s (goal >= {GOALS['rate']:,}: {met})")
        if "plain" in results:
            share = job["rate"] / results["plain"]["rate"]
            print(f"job / plain statement: {share:.0%} (goal >= 60 %: {verdict(share >= GOALS['of_plain'])})")
        if "bare" in results:
            print(
                f"job / bare UPDATE without triggers: {job['rate'] / results['bare']['rate']:.0%} (reference)"
            )
        if "loop" in results:
            ratio = job["rate"] / results["loop"]["rate"]
            print(
                f"job / row-by-row loop: {ratio:,.0f}x (goal >= 100x: {verdict(ratio >= GOALS['of_loop'])}); "
                f"the loop would take {due / results['loop']['rate'] / 60:,.1f} min for all {due:,}"
            )
        if "naive" in results:
            print(f"job / naive batches (no keyset): {job['rate'] / results['naive']['rate']:.1f}x")
        print(
            f"job process peak RSS: {job['rss_mb']:.0f} MB "
            f"(goal <= {GOALS['rss_mb']} MB: {verdict(job['rss_mb'] <= GOALS['rss_mb'])})"
        )
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
