"""Queue depth: one Lua round trip against the naive way, in the same run.

    .venv/bin/python bench/depth_read.py [--repeat N]

Starts a throwaway redis-server, fills it like a busy Celery fleet (each
queue's 4 priority lists hold messages; the ``unacked`` hash holds reserved
messages of ~1 KB made by a real Celery producer) and times, median of
several repetitions:

- lua       ``DepthReader.read()``: the product path, one EVALSHA, its route
            cache warm (an untimed reading just before saw the same reserved
            messages)
- pipeline  one pipeline of LLENs + HVALS, routing keys parsed in Python
- naive     LLEN per key, one round trip each, + HVALS parsed in Python
            (what celery-exporter/KEDA-style monitors do, plus the unacked hash)

and, for the product path, the states of its route cache (delivery tag ->
routing key, kept in Redis by the script): warm; 10 % and 100 % of the
reserved messages new since the previous (untimed) reading (tasks finished,
others started: their values must be read); cold (the cache deleted, as after
a FLUSHALL or the first reading); and the cache switched off (every value
read, no write: what the script did before it had a cache). Whatever
prepares a timed reading happens outside the timing.

It checks that every method and state gives the counts that were written,
and reports how long each script call blocks Redis (server-side time per call
from INFO commandstats: Redis runs scripts on its single thread, so nothing
else is served then).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis

from beatless.local.servers import RedisServer
from beatless.queues import DepthReader, QueueDepth, connect
from beatless.queues.transport import TransportOptions

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


@dataclass
class Filled:
    truth: dict[str, QueueDepth]
    message: dict[str, object]
    tags: list[str] = field(default_factory=list)  # unacked entries, oldest first
    routes: dict[str, str] = field(default_factory=dict)  # their routing keys


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


def unacked_value(message: dict[str, object], tag: str, queue: str) -> str:
    # kombu: HSET unacked <tag> dumps([message._raw, exchange, routing_key])
    held = {**message, "properties": {**message["properties"], "delivery_tag": tag}}  # type: ignore[dict-item]
    return json.dumps([held, "", queue])


def fill(url: str, scenario: Scenario, template: dict[str, object]) -> Filled:
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
    filled = Filled(truth={}, message=json.loads(small))
    reserved: Counter[str] = Counter()
    pipe = client.pipeline(transaction=False)
    for i in range(scenario.reserved):
        queue = rng.choice(queues)
        reserved[queue] += 1
        tag = f"{i:08d}-5b1e-4e6f-9a7b-2d4c8e1f0a11"
        filled.tags.append(tag)
        filled.routes[tag] = queue
        pipe.hset(OPTIONS.unacked_hash_key, tag, unacked_value(filled.message, tag, queue))
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    filled.truth = {q: QueueDepth(pending=pending[q], reserved=reserved[q]) for q in queues}
    return filled


def renew(client: redis.Redis, filled: Filled, fraction: float) -> None:
    """The oldest `fraction` of the reserved messages are acknowledged and as
    many new ones of the same queues are delivered (fresh uuid4 tags, as
    kombu): the counts stay the same, the cache does not know the new tags."""
    n = round(len(filled.tags) * fraction)
    old, filled.tags = filled.tags[:n], filled.tags[n:]
    pipe = client.pipeline(transaction=False)
    for i, tag in enumerate(old):
        queue = filled.routes.pop(tag)
        new = str(uuid.uuid4())
        filled.tags.append(new)
        filled.routes[new] = queue
        pipe.hdel(OPTIONS.unacked_hash_key, tag)
        pipe.hset(OPTIONS.unacked_hash_key, new, unacked_value(filled.message, new, queue))
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def read_queues(reader: DepthReader) -> dict[str, QueueDepth]:
    return dict(reader.read().queues)


def parse_unacked(values: list[Any], queues: list[str]) -> Counter[str]:
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


@dataclass(frozen=True)
class Method:
    run: Callable[[], dict[str, QueueDepth]]
    prepare: Callable[[], object] = lambda: None  # untimed, before each timed run


def interleaved_medians(methods: Mapping[str, Method], repeat: int) -> dict[str, float]:
    """Median ms per method. The methods take turns within each repetition
    (order rotated), so a busy neighbour on the machine slows all alike."""
    for method in methods.values():
        method.run()  # warm: connection open, script cached
    names = list(methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeat):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            methods[name].prepare()
            start = time.perf_counter()
            methods[name].run()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def script_block_ms(client: redis.Redis, method: Method, repeat: int) -> float:
    """Median server time of the timed EVALSHA (`prepare` may run scripts too:
    only the timed call's share of INFO commandstats is counted)."""

    def evalsha() -> tuple[int, int]:
        stats = client.info("commandstats").get("cmdstat_evalsha", {})
        return int(stats.get("calls", 0)), int(stats.get("usec", 0))

    times = []
    for _ in range(repeat):
        method.prepare()
        calls, usec = evalsha()
        method.run()
        calls_after, usec_after = evalsha()
        assert calls_after == calls + 1
        times.append((usec_after - usec) / 1000)
    return statistics.median(times)


# the product path in each state of its route cache
STATES = ("warm", "10% new", "all new", "all new, cache off", "cold", "cache off")


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
            filled = fill(server.url, scenario, template)
            truth = filled.truth
            queues = list(truth)
            client = connect(server.url, timeout=30)
            reader = DepthReader(client, queues, OPTIONS)
            uncached = DepthReader(client, queues, OPTIONS, route_cache=False)

            product = partial(read_queues, reader)
            drop_cache = partial(client.delete, reader.route_cache_key)

            def renewing(
                fraction: float,
                c: redis.Redis = client,
                f: Filled = filled,
                read: Callable[[], object] = product,
            ) -> Callable[[], None]:
                def prepare() -> None:
                    read()  # the previous reading saw them all...
                    renew(c, f, fraction)  # ...then some were replaced

                return prepare

            states = {
                "warm": Method(product, product),
                "10% new": Method(product, renewing(0.1)),
                "all new": Method(product, renewing(1.0)),
                "all new, cache off": Method(
                    partial(read_queues, uncached), partial(renew, client, filled, 1.0)
                ),
                "cold": Method(product, drop_cache),
                "cache off": Method(partial(read_queues, uncached)),
            }
            methods = {
                **states,
                "pipeline": Method(partial(pipelined, client, queues)),
                "naive": Method(partial(naive, client, queues)),
            }
            for name, method in methods.items():
                method.prepare()
                if method.run() != truth:
                    mismatches.append(f"{scenario.label}: {name} != written")
            medians = interleaved_medians(methods, args.repeat if scenario.queues < 100 else big_repeat)
            blocked = {name: script_block_ms(client, states[name], big_repeat) for name in STATES}
            product()  # the cache as the steady state leaves it
            cache_entries = client.hlen(reader.route_cache_key)
            cache_bytes = client.memory_usage(reader.route_cache_key, samples=0) or 0
            unacked_bytes = client.memory_usage(OPTIONS.unacked_hash_key, samples=0) or 0
            rows.append((scenario, medians, blocked, (cache_entries, cache_bytes, unacked_bytes)))
            client.close()
        load = os.getloadavg()[0]

    print(f"redis-server on loopback; unacked entries of {entry_size} bytes (a real Celery message)")
    print(
        f"median of {args.repeat} (a) / {big_repeat} (b) interleaved repetitions; "
        f"load average {load:.2f} on {os.cpu_count()} CPUs; "
        + (
            "every method and cache state agrees with the counts written"
            if not mismatches
            else "COUNTS DIFFER"
        )
    )
    print()
    header = (
        f"{'scenario':<44}{'lua (1 trip)':>13}{'pipeline':>11}{'naive loop':>12}"
        f"{'naive/lua':>10}{'Redis blocked':>15}  goal"
    )
    print(header)
    print("-" * (len(header) + 30))
    for scenario, m, blocked, _ in rows:
        lua, pipe, loop = m["warm"], m["pipeline"], m["naive"]
        print(
            f"{scenario.label:<44}{lua:>10.2f} ms{pipe:>8.2f} ms{loop:>9.2f} ms{loop / lua:>9.1f}x"
            f"{blocked['warm']:>12.2f} ms  {goal_text(scenario, lua, loop)}"
        )
    print()
    print("The product path (lua) by state of its route cache, in the same run:")
    header = f"{'':<8}{'state':<22}{'wall':>10}{'Redis blocked':>15}{'naive/lua':>11}  goal of the scenario"
    print(header)
    print("-" * (len(header) + 12))
    for scenario, m, blocked, _ in rows:
        for i, name in enumerate(STATES):
            label = scenario.label[:3] if i == 0 else ""
            print(
                f"{label:<8}{name:<22}{m[name]:>7.2f} ms{blocked[name]:>12.2f} ms"
                f"{m['naive'] / m[name]:>10.1f}x  {goal_text(scenario, m[name], m['naive'])}"
            )
    print()
    for scenario, _, _, (entries, cache_bytes, unacked_bytes) in rows:
        print(
            f"{scenario.label[:3]} route cache, steady state: {entries} entries, "
            f"{cache_bytes / 1024:.0f} KiB (the unacked hash: {unacked_bytes / 1024:.0f} KiB)"
        )
    print()
    print("Redis blocked = server time of one EVALSHA (INFO commandstats): nothing else is served meanwhile.")
    print("warm: the reserved messages are those of the previous reading; N% new: that share was")
    print("acknowledged and replaced by new deliveries since (their values must be read); cold: no cache;")
    print("cache off: every value read, nothing written (the script before it had a cache).")
    for mismatch in mismatches:
        print("MISMATCH:", mismatch)
    return 1 if mismatches else 0


def goal_text(scenario: Scenario, lua: float, loop: float) -> str:
    goal = f"<= {scenario.goal_ms:g} ms" + (f", >= {scenario.goal_ratio:g}x" if scenario.goal_ratio else "")
    met = lua <= scenario.goal_ms and (not scenario.goal_ratio or loop / lua >= scenario.goal_ratio)
    return f"{goal}: {'met' if met else 'MISSED'}"


if __name__ == "__main__":
    raise SystemExit(main())
