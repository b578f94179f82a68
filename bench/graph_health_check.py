"""The kuzu_instance_monitor's health check over 1,000 instances: AWS calls by operation, wall time.

    .venv/bin/python bench/graph_health_check.py                    # 1,000 registered instances
    .venv/bin/python bench/graph_health_check.py --instances 50     # a few seconds

moto in this process (`mock_aws`: EC2, DynamoDB, CloudWatch). EC2 gets the instances with
`run_instances`, --per-reservation instances a call (default 1: one reservation each, as
instances an Auto Scaling group launches one by one); 2 % are then stopped, 1 %
terminated, and 0.5 % are registered without EC2 ever having heard of them. Every
instance is registered in the instance registry (`beatless.graphs.registry`), each
terminated one with two graphs placed on it. Their `/health` is one cheap HTTP stub on
loopback speaking the node's JSON (`{"status": "healthy", "capacity", "database_count",
"disk_used_bytes", "disk_total_bytes", "version"}`, the API key checked), except 1 %
whose endpoint is a closed port (refused).

Every AWS call is counted by operation (botocore `before-call` hooks on the clients the
monitor gets; continuation pages of DescribeInstances, i.e. calls with a NextToken,
apart). Runs, in this order:

1. naive   — what a loop without batching does: one `DescribeInstances(InstanceIds=[id])`
             per instance, then the `/health` of each running one, one at a time (read-only);
2. monitor — `maintain(..., Action.HEALTH_CHECK)` as the Lambda runs it (real writes:
             rows removed, graphs orphaned, statuses set; metrics published). Checked
             against what was set up;
3. pages   — the same health check as a dry run with DynamoDB pages forced to
             --scan-page items (a `Limit` injected into each Scan): the registry read
             must follow every LastEvaluatedKey and still check every instance;

Goals: DescribeInstances calls <= ceil(n / 200) + 1; registry reads paginated.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

KEY = "bench-monitor-key-0123456789"
REGION = "us-east-1"
PER_CALL = 200  # monitor.EC2_FILTER_VALUES


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message} ({load_average()})", flush=True)


# -- the /health stub ---------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # listen() backlog: the default 5 drops SYNs of 16 checks at once (1 s retry)


class HealthStub:
    """One loopback HTTP server answering GET /health as a node does; counts requests."""

    def __init__(self) -> None:
        self.requests = 0
        self.refused_key = 0
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with stub._lock:
                    stub.requests += 1
                if self.headers.get("X-Api-Key") != KEY:
                    with stub._lock:
                        stub.refused_key += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps(
                    {
                        "status": "healthy",
                        "capacity": 50,
                        "database_count": 3,
                        "disk_used_bytes": 10 * 2**30,
                        "disk_total_bytes": 100 * 2**30,
                        "version": "bench",
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HealthStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- call counting ------------------------------------------------------------------------


class Calls:
    """AWS calls by operation, through botocore's event hooks on each client."""

    def __init__(self) -> None:
        self.by_operation: Counter[str] = Counter()
        self.continued: Counter[str] = Counter()  # calls that carried a NextToken / ExclusiveStartKey
        self.scan_items: list[int] = []
        self.scan_limit = 0  # > 0: inject Limit into every Scan (pagination demonstration)

    def attach(self, client: Any) -> None:
        events = client.meta.events
        events.register("before-call", self._call)
        events.register("before-parameter-build.ec2.DescribeInstances", self._describe)
        events.register("before-parameter-build.dynamodb.Scan", self._scan)
        events.register("after-call.dynamodb.Scan", self._scanned)

    def reset(self) -> None:
        self.by_operation.clear()
        self.continued.clear()
        self.scan_items.clear()

    def _call(self, model: Any, **kwargs: Any) -> None:
        self.by_operation[model.name] += 1

    def _describe(self, params: dict[str, Any], **kwargs: Any) -> None:
        if params.get("NextToken"):
            self.continued["DescribeInstances"] += 1

    def _scan(self, params: dict[str, Any], **kwargs: Any) -> None:
        if self.scan_limit:
            params["Limit"] = self.scan_limit
        if params.get("ExclusiveStartKey"):
            self.continued["Scan"] += 1

    def _scanned(self, parsed: dict[str, Any], **kwargs: Any) -> None:
        self.scan_items.append(int(parsed.get("Count", 0)))


# -- the world ----------------------------------------------------------------------------


@contextmanager
def moto() -> Iterator[None]:
    """moto in this process; any AWS_ENDPOINT_URL of the shell set aside meanwhile."""
    from moto import mock_aws

    from beatless.local.servers import environ

    fake: dict[str, str | None] = {
        "AWS_ENDPOINT_URL": None,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }
    with environ(fake), mock_aws():
        yield


def build(n: int, per_reservation: int, stub_url: str, refusing_url: str) -> dict[str, Any]:
    import boto3

    from beatless.graphs.registry import GraphStatus, Registries, create_tables

    ec2 = boto3.client("ec2", region_name=REGION)
    image = ec2.describe_images()["Images"][0]["ImageId"]
    ghosts = max(1, n // 200)
    in_ec2 = n - ghosts
    ids: list[str] = []
    while len(ids) < in_ec2:
        count = min(per_reservation, in_ec2 - len(ids))
        launched = ec2.run_instances(ImageId=image, MinCount=count, MaxCount=count, InstanceType="t3.micro")
        ids.extend(i["InstanceId"] for i in launched["Instances"])
    stopped = ids[: max(1, n // 50)]
    terminated = ids[len(stopped) : len(stopped) + max(1, n // 100)]
    rest = ids[len(stopped) + len(terminated) :]
    refusing = rest[: max(1, n // 100)]
    healthy = rest[len(refusing) :]
    ec2.stop_instances(InstanceIds=stopped)
    ec2.terminate_instances(InstanceIds=terminated)
    ghost_ids = [f"i-0bad{g:013x}" for g in range(ghosts)]

    create_tables(boto3.client("dynamodb", region_name=REGION), "instances", "graphs")
    registries = Registries(boto3.resource("dynamodb", region_name=REGION), "instances", "graphs")
    now = datetime.now(UTC)
    for instance_id in [*ids, *ghost_ids]:
        endpoint = refusing_url if instance_id in set(refusing) else stub_url
        registries.register(instance_id, endpoint=endpoint, capacity=50, at=now, version="bench")
    graphs = 0
    for instance_id in terminated:
        for k in range(2):
            registries.graphs.put_item(
                Item={"graph_id": f"g-{instance_id}-{k}", "instance_id": instance_id, "status": "active"}
            )
            graphs += 1
    for k, instance_id in enumerate(healthy[:: max(1, len(healthy) // 50)]):
        registries.graphs.put_item(
            Item={"graph_id": f"live-{k}", "instance_id": instance_id, "status": str(GraphStatus.ACTIVE)}
        )
    return {
        "ec2": ec2,
        "registries": registries,
        "stopped": set(stopped),
        "terminated": set(terminated),
        "ghosts": set(ghost_ids),
        "refusing": set(refusing),
        "healthy": set(healthy),
        "orphanable": graphs,
    }


def naive(world: dict[str, Any], health: Any) -> dict[str, Any]:
    """One DescribeInstances per instance, then /health one at a time (read-only)."""
    from botocore.exceptions import ClientError

    started = time.perf_counter()
    instances = list(world["registries"].all_instances())
    running = []
    for instance in instances:
        try:
            found = world["ec2"].describe_instances(InstanceIds=[instance.instance_id])
        except ClientError:
            continue  # unknown to EC2
        states = [i["State"]["Name"] for r in found["Reservations"] for i in r["Instances"]]
        if states == ["running"]:
            running.append(instance)
    failing = sum(health(instance) is not None for instance in running)
    return {"seconds": time.perf_counter() - started, "running": len(running), "failing": failing}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=1000, help="registered instances")
    parser.add_argument("--per-reservation", type=int, default=1, help="instances per run_instances call")
    parser.add_argument("--scan-page", type=int, default=100, help="items per Scan page in the pages run")
    args = parser.parse_args()
    n = args.instances

    import boto3

    from beatless.graphs.monitor import Action, Clients, MonitorSettings, http_health, maintain
    from beatless.local.servers import free_port

    settings = MonitorSettings(instance_table="instances", graph_table="graphs")
    refusing_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there: refused
    results: dict[str, Any] = {}
    with moto(), HealthStub() as stub:
        started = time.perf_counter()
        world = build(n, args.per_reservation, stub.url, refusing_url)
        log(f"set up {n:,} instances in moto in {time.perf_counter() - started:.1f} s")
        calls = Calls()
        registries = world["registries"]
        cloudwatch = boto3.client("cloudwatch", region_name=REGION)
        for client in (world["ec2"], registries.client, cloudwatch):
            calls.attach(client)
        health = http_health(KEY)
        clients = Clients(registries, world["ec2"], cloudwatch, health)

        log("naive ...")
        calls.reset()
        stub.requests = 0
        results["naive"] = {
            **naive(world, health),
            "calls": Counter(calls.by_operation),
            "stub": stub.requests,
        }

        log("monitor ...")
        calls.reset()
        stub.requests = 0
        now = datetime.now(UTC)
        started = time.perf_counter()
        report = maintain(clients, settings, Action.HEALTH_CHECK, now=now, dry_run=False)
        results["monitor"] = {
            "seconds": time.perf_counter() - started,
            "calls": Counter(calls.by_operation),
            "continued": Counter(calls.continued),
            "scan_items": list(calls.scan_items),
            "stub": stub.requests,
            "report": report,
        }

        log(f"pages (dry run, Scan Limit {args.scan_page}) ...")
        calls.reset()
        calls.scan_limit = args.scan_page
        left = sum(1 for _ in registries.all_instances())
        calls.reset()
        started = time.perf_counter()
        paged = maintain(clients, settings, Action.HEALTH_CHECK, now=now, dry_run=True)
        results["pages"] = {
            "seconds": time.perf_counter() - started,
            "calls": Counter(calls.by_operation),
            "continued": Counter(calls.continued),
            "scan_items": list(calls.scan_items),
            "checked": paged.checked,
            "left": left,
        }
        calls.scan_limit = 0

    return report_table(args, world, results)


def report_table(args: argparse.Namespace, world: dict[str, Any], results: dict[str, Any]) -> int:
    n = args.instances
    limit = math.ceil(n / PER_CALL) + 1
    mon = results["monitor"]
    report = mon["report"]
    removed_expected = world["terminated"] | world["ghosts"]
    unhealthy_expected = world["stopped"] | world["refusing"]
    checks = {
        "every instance checked": report.checked == n,
        "terminated + unknown removed": set(report.removed) == removed_expected,
        "their graphs orphaned": len(report.orphaned_graphs) == world["orphanable"],
        "stopped + refused marked unhealthy": set(report.marked_unhealthy) == unhealthy_expected,
        "the rest healthy": set(report.healthy) == world["healthy"],
        "/health asked of each running one with an open port": mon["stub"] == len(world["healthy"]),
        "pages run checked every instance left": results["pages"]["checked"] == results["pages"]["left"],
    }
    print()
    print(
        f"{n:,} registered instances ({len(world['healthy']):,} healthy, {len(world['refusing'])} refusing "
        f"/health, {len(world['stopped'])} stopped, {len(world['terminated'])} terminated, "
        f"{len(world['ghosts'])} unknown to EC2); {args.per_reservation} instance(s) per reservation; "
        f"moto in-process; {load_average()}"
    )
    print()
    ops = sorted(set(results["naive"]["calls"]) | set(mon["calls"]) | set(results["pages"]["calls"]))
    header = f"{'AWS operation':<24}{'naive':>10}{'monitor':>10}{'pages':>10}  notes"
    print(header)
    print("-" * 100)
    for op in ops:
        note = ""
        if op == "DescribeInstances":
            note = (
                f"monitor: {mon['continued']['DescribeInstances']} of them continuation pages (NextToken); "
                f"goal <= ceil({n}/{PER_CALL})+1 = {limit}: {_verdict(mon['calls'][op] <= limit)}"
            )
        elif op == "Scan":
            paged = results["pages"]["scan_items"]
            more = " ..." if len(paged) > 12 else ""
            note = f"items per page: monitor {mon['scan_items']}, pages run {paged[:12]}{more}"
        elif op == "Query":
            note = "graphs_on (GSI) of each removed instance, paginated"
        print(
            f"{op:<24}{results['naive']['calls'][op]:>10,}{mon['calls'][op]:>10,}"
            f"{results['pages']['calls'][op]:>10,}  {note}"
        )
    total = {k: sum(results[k]["calls"].values()) for k in ("naive", "monitor", "pages")}
    print(f"{'(all)':<24}{total['naive']:>10,}{total['monitor']:>10,}{total['pages']:>10,}")
    print(
        f"{'wall time':<24}{results['naive']['seconds']:>9.2f}s{mon['seconds']:>9.2f}s"
        f"{results['pages']['seconds']:>9.2f}s  naive: read-only, one /health at a time; "
        f"monitor: {monitor_concurrency()} at a time, with its writes"
    )
    print()
    pages = results["pages"]
    scans = pages["calls"]["Scan"]
    paginated = scans >= math.ceil(pages["left"] / args.scan_page) and pages["continued"]["Scan"] == scans - 1
    print(
        f"registry reads paginated: {pages['calls']['Scan']} Scan pages of <= {args.scan_page} for "
        f"{pages['left']} rows, {pages['continued']['Scan']} with ExclusiveStartKey; every row checked: "
        f"{_verdict(paginated and pages['checked'] == pages['left'])}"
    )
    ratio = results["naive"]["seconds"] / mon["seconds"]
    print(f"monitor wall time: {mon['seconds']:.2f} s (naive / monitor: {ratio:.1f}x)")
    wrong = 0
    for name, ok in checks.items():
        wrong += not ok
        print(f"check: {name}: {'ok' if ok else 'WRONG'}")
    return 1 if wrong else 0


def monitor_concurrency() -> int:
    from beatless.graphs.monitor import HEALTH_CONCURRENCY

    return HEALTH_CONCURRENCY


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


if __name__ == "__main__":
    raise SystemExit(main())
