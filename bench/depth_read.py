"""Queue depth: one Lua round trip against the naive way, in the same run.

    .venv/bin/python bench/depth_read.py [--repeat N]

Starts a throwaway redis-server, fills it like a busy Celery fleet (each
queue's 4 priority lists hold messages; the ``unacked`` hash holds reserved
messages of ~1 KB made by a real Celery producer) and times, median of
several repetitions:

- lua       ``DepthReader.read()``: the product path, one EVALSHA
- pipeline  one pipeline of LLENs + HVALS, routing keys parsed in Python
- naive     LLEN per key, one round trip each, + HVALS parsed in Python
            (what celery-exporter/KEDA-style monitors do, plus the unacked hash)

It checks that all three give identical counts, and reports how long the
script blocks Redis (server-side time per call from INFO commandstats:
Redis runs scripts on its single thread, so nothing else is served then).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import redis

from beatless.broker import TransportOptions
from beatless.local.servers import RedisServer
from beatless.queues import DepthReader, QueueDepth, connect

OPTIONS = TransportOptions(priority_steps=(0, 3, 6, 9))  # 4 lists per queue


@dataclass(frozen=True)
class Scenario:
    label: str
    queues: int
    reserved: int
    goal_ms: float
    goal_ratio: float | None


SCENARIOS = (
    Scenario("(a) 20 queues x 4 lists, 200 reserved", 20, 200, 1.5, None),
    Scenario("(b) 1000 queues x 4 lists, 10000 reserved", 1000, 10_000, 50.0, 10.0),
)


def real_message_template(url: str) -> dict[str, object]:
    """One message exactly as Celery puts it in a list (kombu's raw message),
    with task arguments that make it about 1 KB."""
    from celery import Celery

    app = Celery("bench", broker=url, set_as_current=False)
    app.conf.broker_transport_options = OPTIONS.as_kombu_options()
    client = redis.Redis.from_url(url)
    args = {"graph_id": "kg_" + "a" * 24, "query": "MATCH (n:Entity)-[r]->(m) RETURN n, r, m LIMIT 100"}
    app.send_task("graphs.run_query", kwargs=args, queue="template", priority=0)
    raw = client.rpop("template")
    assert raw is not None
    client.delete("template", "_kombu.binding.template", "_kombu.binding_permanent.template")
    message: dict[str, object] = json.loads(raw)
    return message


def fill(url: str, scenario: Scenario, template: dict[str, object]) -> dict[str, QueueDepth]:
    """Fill Redis; returns the counts it put there (the truth to check against)."""
    client = redis.Redis.from_url(url)
    client.flushall()
    rng = random.Random(scenario.queues)
    queues = [f"queue-{i:04d}" for i in range(scenario.queues)]
    pending: Counter[str] = Counter()
    pipe = client.pipeline(transaction=False)
    small = json.dumps(template)
    for queue in queues:
        for key in OPTIONS.queue_list_keys(queue):
            n = rng.randint(0, 3)
            if n:
                pipe.lpush(key, *([small] * n))
                pending[queue] += n
    pipe.execute()
    reserved: Counter[str] = Counter()
    pipe = client.pipeline(transaction=False)
    for i in range(scenario.reserved):
        queue = rng.choice(queues)
        reserved[queue] += 1
        tag = f"{i:08d}-5b1e-4e6f-9a7b-2d4c8e1f0a11"
        message = json.loads(small)
        message["properties"] = {**message["properties"], "delivery_tag": tag}  # type: ignore[dict-item]
        # kombu: HSET unacked <tag> dumps([message._raw, exchange, routing_key])
        pipe.hset(OPTIONS.unacked_hash_key, tag, json.dumps([message, "", queue]))
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    return {q: QueueDepth(pending=pending[q], reserved=reserved[q]) for q in queues}


def parse_unacked(values: list[bytes], queues: list[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    wanted = set(queues)
    for value in values:
        routing_key = json.loads(value)[2]
        if routing_key in wanted:
            counts[routing_key] += 1
    return counts


def naive(client: redis.Redis, queues: list[str]) -> dict[str, QueueDepth]:
    pending = {q: sum(int(client.llen(k)) for k in OPTIONS.queue_list_keys(q)) for q in queues}
    reserved = parse_unacked(client.hvals(OPTIONS.unacked_hash_key), queues)
    return {q: QueueDepth(pending=pending[q], reserved=reserved[q]) for q in queues}


def pipelined(client: redis.Redis, queues: list[str]) -> dict[str, QueueDepth]:
    pipe = client.pipeline(transaction=False)
    for q in queues:
        for k in OPTIONS.queue_list_keys(q):
            pipe.llen(k)
    pipe.hvals(OPTIONS.unacked_hash_key)
    *lens, values = pipe.execute()
    steps = len(OPTIONS.priority_steps)
    reserved = parse_unacked(values, queues)
    return {
        q: QueueDepth(pending=sum(lens[i * steps : (i + 1) * steps]), reserved=reserved[q])
        for i, q in enumerate(queues)
    }


def interleaved_medians(methods: Mapping[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median ms per method. The methods take turns within each repetition
    (order rotated), so a busy neighbour on the machine slows all alike."""
    for fn in methods.values():
        fn()  # warm: connection open, script cached
    names = list(methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeat):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            start = time.perf_counter()
            methods[name]()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def script_block_ms(client: redis.Redis, reader: DepthReader, repeat: int) -> float:
    client.config_resetstat()
    for _ in range(repeat):
        reader.read()
    stats = client.info("commandstats")
    evalsha = stats.get("cmdstat_evalsha", {})
    return float(evalsha.get("usec_per_call", 0.0)) / 1000


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=15, help="repetitions per method (median reported)")
    args = parser.parse_args()
    big_repeat = max(5, args.repeat // 2)  # the naive loop of (b) takes ~0.3-0.6 s a time

    rows = []
    mismatches = []
    with RedisServer() as server:
        template = real_message_template(server.url)
        entry_size = len(json.dumps([template, "", "queue-0000"]))
        for scenario in SCENARIOS:
            truth = fill(server.url, scenario, template)
            queues = list(truth)
            client = connect(server.url, timeout=30)
            reader = DepthReader(client, queues, OPTIONS)
            methods: dict[str, Callable[[], dict[str, QueueDepth]]] = {
                "lua": lambda r=reader: dict(r.read().queues),
                "pipeline": lambda c=client, q=queues: pipelined(c, q),
                "naive": lambda c=client, q=queues: naive(c, q),
            }
            mismatches += [f"{scenario.label}: {n} != written" for n, fn in methods.items() if fn() != truth]
            medians = interleaved_medians(methods, args.repeat if scenario.queues < 100 else big_repeat)
            blocked = script_block_ms(client, reader, args.repeat)
            rows.append((scenario, medians, blocked))
            client.close()
        load = os.getloadavg()[0]

    print(f"redis-server on loopback; unacked entries of {entry_size} bytes (a real Celery message)")
    print(
        f"median of {args.repeat} (a) / {big_repeat} (b) interleaved repetitions; "
        f"load average {load:.2f} on {os.cpu_count()} CPUs; "
        + ("the three methods agree on every count" if not mismatches else "COUNTS DIFFER")
    )
    print()
    header = (
        f"{'scenario':<44}{'lua (1 trip)':>13}{'pipeline':>11}{'naive loop':>12}"
        f"{'naive/lua':>10}{'Redis blocked':>15}  goal"
    )
    print(header)
    print("-" * (len(header) + 30))
    for scenario, m, blocked in rows:
        lua, pipe, loop = m["lua"], m["pipeline"], m["naive"]
        goal = f"<= {scenario.goal_ms:g} ms" + (
            f", >= {scenario.goal_ratio:g}x" if scenario.goal_ratio else ""
        )
        met = lua <= scenario.goal_ms and (not scenario.goal_ratio or loop / lua >= scenario.goal_ratio)
        print(
            f"{scenario.label:<44}{lua:>10.2f} ms{pipe:>8.2f} ms{loop:>9.2f} ms{loop / lua:>9.1f}x"
            f"{blocked:>12.2f} ms  {goal}: {'met' if met else 'MISSED'}"
        )
    print()
    print("Redis blocked = server time of one EVALSHA (INFO commandstats): nothing else is served meanwhile.")
    for mismatch in mismatches:
        print("MISMATCH:", mismatch)
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
