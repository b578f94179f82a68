"""The depth script's route cache (delivery tag -> routing key, kept in Redis):
whatever happens to the cache or the unacked hash between readings, every
count stays exact, and a cache Redis refuses to keep only costs speed.

Exactness is checked against a snapshot taken in the same MULTI/EXEC as the
reading (LLEN of every list + HGETALL of the unacked hash, parsed here with
json), so it holds even while a real worker acknowledges messages."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import depth_app
import pytest
import redis

from beatless.errors import InvalidInputError
from beatless.local.servers import RedisServer
from beatless.queues import DepthReader, DepthReading, QueueDepth, connect
from beatless.queues.depth import MONITOR_ACL_RULES
from beatless.queues.transport import TransportOptions
from beatless.queues.wake import SAMPLING_KEY, mark_sampling

HERE = Path(__file__).resolve().parent
LAYOUT = TransportOptions(priority_steps=(0, 5))
QUEUES = ("graph", "ingest", "default")
MESSAGE = {"body": "x" * 1000, "headers": {}, "properties": {"delivery_info": {}}}


def deliver(client: redis.Redis, options: TransportOptions, queue: str, n: int = 1) -> list[str]:
    """Entries as kombu's QoS.append writes them: a fresh uuid4 tag each."""
    tags = [str(uuid.uuid4()) for _ in range(n)]
    for tag in tags:
        message = {**MESSAGE, "properties": {"delivery_tag": tag, "delivery_info": {"routing_key": queue}}}
        client.hset(options.unacked_hash_key, tag, json.dumps([message, "", queue]))
    return tags


def acknowledge(client: redis.Redis, options: TransportOptions, tags: list[str]) -> None:
    if tags:
        client.hdel(options.unacked_hash_key, *tags)


def read_with_truth(reader: DepthReader) -> tuple[DepthReading, dict[str, QueueDepth], int, int]:
    """A reading and, from the same atomic moment, the counts Redis holds,
    the unacked entries and the route cache's size."""
    pipe = reader.client.pipeline(transaction=True)
    reader.script(keys=reader.keys, args=reader.args, client=pipe)
    steps = len(reader.options.priority_steps)
    for key in reader.keys[:-2]:
        pipe.llen(key)
    pipe.hgetall(reader.options.unacked_hash_key)
    pipe.hlen(reader.route_cache_key)
    reply, *lens, unacked, cache_size = pipe.execute()
    routing_keys = Counter(json.loads(value)[2] for value in unacked.values())
    truth = {
        q: QueueDepth(pending=sum(lens[i * steps : (i + 1) * steps]), reserved=routing_keys[q])
        for i, q in enumerate(reader.queues)
    }
    return reader.parse(reply), truth, len(unacked), cache_size


def assert_exact(reader: DepthReader) -> DepthReading:
    reading, truth, live, cache_size = read_with_truth(reader)
    assert reading.queues == truth
    assert reading.routes_cached + reading.routes_parsed + reading.unparsed_reserved == live
    # bounded: at most 1.5 cache entries per unacked entry, none when nothing is unacked
    assert cache_size <= 1.5 * live
    return reading


def test_a_second_reading_takes_routes_from_the_cache(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    tags = {queue: deliver(client, LAYOUT, queue, n) for queue, n in zip(QUEUES, (3, 2, 1), strict=True)}
    depth_app.send(depth_app.make_app(redis_url, LAYOUT.as_kombu_options()), "graph", [0, 7])
    reader = DepthReader(connect(redis_url), QUEUES, LAYOUT)

    first = reader.read()
    second = reader.read()

    expected = {"graph": QueueDepth(2, 3), "ingest": QueueDepth(0, 2), "default": QueueDepth(0, 1)}
    assert first.queues == second.queues == expected
    assert (first.routes_cached, first.routes_parsed) == (0, 6)
    assert (second.routes_cached, second.routes_parsed) == (6, 0)
    assert first.route_cache_error == second.route_cache_error == ""
    cache = client.hgetall(reader.route_cache_key)
    assert cache == {t.encode(): q.encode() for q, ts in tags.items() for t in ts}
    assert 0 < client.ttl(reader.route_cache_key) <= 86400


def test_unacked_shrinking_and_growing_between_readings(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    reader = DepthReader(connect(redis_url), QUEUES, LAYOUT)
    held = {q: deliver(client, LAYOUT, q, 40) for q in QUEUES}
    assert assert_exact(reader).routes_parsed == 120

    # workers acknowledge some, receive others, of other queues too
    acknowledge(client, LAYOUT, held["graph"][:30])
    held["graph"] = held["graph"][30:]
    held["ingest"] += deliver(client, LAYOUT, "ingest", 25)
    foreign = deliver(client, LAYOUT, "not-read", 5)
    reading = assert_exact(reader)
    assert (reading.routes_cached, reading.routes_parsed) == (90, 30)
    assert reading.other_reserved == 5

    # most of what the cache knows is gone: it is rewritten, not left to grow
    for q in ("graph", "ingest"):
        acknowledge(client, LAYOUT, held[q])
        held[q] = []
    reading = assert_exact(reader)
    assert reading.routes_cached == 45
    assert client.hlen(reader.route_cache_key) == 45

    # everything acknowledged: the cache is emptied
    acknowledge(client, LAYOUT, held["default"] + foreign)
    reading = assert_exact(reader)
    assert reading.queues == {q: QueueDepth(0, 0) for q in QUEUES}
    assert client.exists(reader.route_cache_key) == 0

    # and it fills again
    deliver(client, LAYOUT, "graph", 7)
    assert assert_exact(reader).queues["graph"] == QueueDepth(0, 7)
    assert assert_exact(reader).routes_cached == 7


def deliver_many(client: redis.Redis, options: TransportOptions, queues: tuple[str, ...], n: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        queue = queues[i % len(queues)]
        pipe.hset(options.unacked_hash_key, str(uuid.uuid4()), json.dumps([MESSAGE, "", queue]))
    pipe.execute()


def test_with_many_new_tags_only_a_sample_is_cached(redis_url: str) -> None:
    """Above 1,000 unacked entries (the script's sample) the cache takes part
    for all of them only while it knows a third of the sample: when most tags
    are new at every reading, caching them would cost more than it saves."""
    client = redis.Redis.from_url(redis_url)
    reader = DepthReader(connect(redis_url), QUEUES, LAYOUT)
    deliver_many(client, LAYOUT, QUEUES, 2500)

    cold = assert_exact(reader)  # nothing known: the sample is cached
    assert (cold.routes_cached, cold.routes_parsed) == (0, 2500)
    assert client.hlen(reader.route_cache_key) == 1000
    second = assert_exact(reader)  # the sample is known: every tag takes part
    assert (second.routes_cached, second.routes_parsed) == (1000, 1500)
    assert assert_exact(reader).routes_cached == 2500

    # every task finished and as many new ones started: the cache is rewritten
    # with the sample only, and the next reading takes every tag again
    client.delete(LAYOUT.unacked_hash_key)
    deliver_many(client, LAYOUT, QUEUES, 2500)
    turned_over = assert_exact(reader)
    assert (turned_over.routes_cached, turned_over.routes_parsed) == (0, 2500)
    assert client.hlen(reader.route_cache_key) == 1000
    assert assert_exact(reader).routes_cached == 1000
    settled = assert_exact(reader)
    assert settled.routes_cached == 2500
    assert settled.queues == {q: QueueDepth(0, 2500 // 3 + (i < 2500 % 3)) for i, q in enumerate(QUEUES)}


def test_stale_entries_never_count(redis_url: str) -> None:
    """Entries of acknowledged tags stay in the cache until it is rewritten;
    they must not be counted meanwhile."""
    client = redis.Redis.from_url(redis_url)
    reader = DepthReader(connect(redis_url), QUEUES, LAYOUT)
    tags = deliver(client, LAYOUT, "graph", 10)
    reader.read()
    acknowledge(client, LAYOUT, tags[:3])  # 3 stale of 7 live: no rewrite

    reading = assert_exact(reader)

    assert reading.queues["graph"] == QueueDepth(0, 7)
    assert client.hlen(reader.route_cache_key) == 10


def test_a_lost_cache_only_costs_parsing(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    reader = DepthReader(connect(redis_url), QUEUES, LAYOUT)
    deliver(client, LAYOUT, "graph", 4)
    reader.read()

    client.delete(reader.route_cache_key)
    reading = assert_exact(reader)
    assert (reading.routes_cached, reading.routes_parsed) == (0, 4)

    # FLUSHALL, then the same tags come back with other routing keys: nothing
    # of the old cache survives to mislead the reading
    tags = client.hkeys(LAYOUT.unacked_hash_key)
    client.flushall()
    for tag in tags:
        client.hset(LAYOUT.unacked_hash_key, tag, json.dumps([MESSAGE, "", "ingest"]))
    reading = assert_exact(reader)
    assert reading.queues["ingest"] == QueueDepth(0, 4)
    assert reading.queues["graph"] == QueueDepth(0, 0)


def test_a_cache_key_of_another_type_is_reported_and_the_reading_stays_exact(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    reader = DepthReader(connect(redis_url), QUEUES, LAYOUT)
    deliver(client, LAYOUT, "ingest", 3)
    client.set(reader.route_cache_key, "someone else's")

    reading = reader.read()

    assert reading.queues == {
        "graph": QueueDepth(0, 0),
        "ingest": QueueDepth(0, 3),
        "default": QueueDepth(0, 0),
    }
    assert (reading.routes_cached, reading.routes_parsed) == (0, 3)
    assert "WRONGTYPE" in reading.route_cache_error
    assert client.get(reader.route_cache_key) == b"someone else's"


def test_after_a_redis_restart(own_redis: RedisServer) -> None:
    client = redis.Redis.from_url(own_redis.url)
    reader = DepthReader(connect(own_redis.url), QUEUES, LAYOUT)
    tags = deliver(client, LAYOUT, "graph", 5)
    assert reader.read().routes_parsed == 5

    own_redis.restart()  # no persistence: data, cache and scripts are gone
    client = redis.Redis.from_url(own_redis.url)
    for tag in tags[:2]:
        client.hset(LAYOUT.unacked_hash_key, tag, json.dumps([MESSAGE, "", "default"]))

    reading = assert_exact(reader)
    assert reading.queues == {
        "graph": QueueDepth(0, 0),
        "ingest": QueueDepth(0, 0),
        "default": QueueDepth(0, 2),
    }
    assert (reading.routes_cached, reading.routes_parsed) == (0, 2)


def test_prefix_and_custom_unacked_key_each_have_their_own_cache(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    prefixed = TransportOptions(global_keyprefix="bl:", priority_steps=(0, 5))
    custom = TransportOptions(unacked_key="held", priority_steps=(0, 5))
    deliver(client, prefixed, "graph", 3)
    deliver(client, custom, "graph", 2)
    deliver(client, LAYOUT, "graph", 1)
    readers = [DepthReader(connect(redis_url), ["graph"], o) for o in (prefixed, custom, LAYOUT)]

    first = [assert_exact(r) for r in readers]
    second = [assert_exact(r) for r in readers]

    assert [r.queues["graph"].reserved for r in first] == [3, 2, 1]
    # no reader evicted another's entries
    assert [r.routes_cached for r in second] == [3, 2, 1]
    assert [r.route_cache_key for r in readers] == [
        "bl:unacked:beatless-routes",
        "held:beatless-routes",
        "unacked:beatless-routes",
    ]
    assert all(client.type(r.route_cache_key) == b"hash" for r in readers)


@pytest.mark.parametrize(
    "queue", ["unacked", "unacked:beatless-routes"], ids=["the unacked hash", "the route cache"]
)
def test_a_queue_whose_list_is_not_a_list_is_refused(redis_url: str, queue: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        DepthReader(connect(redis_url), ["graph", queue], LAYOUT)
    assert info.value.field == "QUEUES"


def test_a_redelivered_message_keeps_its_tag_and_routing_key(redis_url: str) -> None:
    """The cache relies on kombu never giving a delivery tag another routing
    key: a real kombu channel rejects a message back to its queue and gets it
    again, and the cached route is still right."""
    client = redis.Redis.from_url(redis_url)
    app = depth_app.make_app(redis_url, LAYOUT.as_kombu_options())
    depth_app.send(app, "ingest", [5])
    reader = DepthReader(connect(redis_url), QUEUES, LAYOUT)
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        message = channel.basic_get("ingest")
        assert message is not None
        tag = message.delivery_tag
        assert assert_exact(reader).queues["ingest"] == QueueDepth(0, 1)

        message.reject(requeue=True)  # kombu restores it to its list...
        assert client.hlen(LAYOUT.unacked_hash_key) == 0
        again = channel.basic_get("ingest")  # ...and delivers it again
        assert again is not None
        reading = assert_exact(reader)
        held = client.hget(LAYOUT.unacked_hash_key, tag)

    assert again.delivery_tag == tag
    assert held is not None and json.loads(held)[2] == "ingest"
    assert reading.queues["ingest"] == QueueDepth(0, 1)
    assert reading.routes_cached == 1


def test_route_cache_off_writes_nothing(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    deliver(client, LAYOUT, "graph", 3)
    reader = DepthReader(connect(redis_url), QUEUES, LAYOUT, route_cache=False)

    readings = [assert_exact(reader) for _ in range(2)]

    assert [(r.routes_cached, r.routes_parsed) for r in readings] == [(0, 3), (0, 3)]
    assert client.exists(reader.route_cache_key) == 0


# --- Redis refuses the cache: exact readings, the reason reported ----------------


def test_a_read_only_replica_reads_exactly_and_uses_the_replicated_cache() -> None:
    with RedisServer() as primary, RedisServer() as replica:
        writer = redis.Redis.from_url(primary.url)
        writer.config_set("repl-diskless-sync-delay", 0)  # sync at once, not after 5 s
        deliver(writer, LAYOUT, "graph", 4)
        deliver(writer, LAYOUT, "ingest", 2)
        watcher = redis.Redis.from_url(replica.url)
        watcher.replicaof("127.0.0.1", primary.port)
        on_replica = DepthReader(connect(replica.url), QUEUES, LAYOUT)

        def synced() -> bool:
            return bool(watcher.info("replication").get("master_link_status") == "up") and watcher.hlen(
                LAYOUT.unacked_hash_key
            ) == writer.hlen(LAYOUT.unacked_hash_key)

        wait_for(synced)
        first = on_replica.read()
        assert first.queues["graph"] == QueueDepth(0, 4)
        assert first.queues["ingest"] == QueueDepth(0, 2)
        assert "READONLY" in first.route_cache_error
        assert watcher.exists(on_replica.route_cache_key) == 0

        DepthReader(connect(primary.url), QUEUES, LAYOUT).read()  # the primary keeps the cache
        wait_for(lambda: watcher.hlen(on_replica.route_cache_key) == 6)
        second = on_replica.read()

    assert second.queues == first.queues
    assert (second.routes_cached, second.routes_parsed) == (6, 0)
    assert second.route_cache_error == ""


def test_out_of_memory_the_reading_stays_exact_and_says_why(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.Redis.from_url(own_redis.url)
    deliver(client, LAYOUT, "graph", 5)
    reader = DepthReader(connect(own_redis.url), QUEUES, LAYOUT)
    client.config_set("maxmemory", client.info("memory")["used_memory"] - 4096)  # noeviction

    with caplog.at_level(logging.WARNING, logger="beatless.queues.depth"):
        readings = [reader.read() for _ in range(3)]

    assert all(r.queues["graph"] == QueueDepth(0, 5) for r in readings)
    assert all(r.route_cache_error.startswith("OOM") for r in readings)
    assert client.exists(reader.route_cache_key) == 0
    warnings = [r for r in caplog.records if "route cache" in r.getMessage()]
    assert len(warnings) == 1  # said once, not at every reading

    client.config_set("maxmemory", 0)
    assert reader.read().route_cache_error == ""
    assert client.hlen(reader.route_cache_key) == 5


def test_the_documented_acl_rules_are_enough(own_redis: RedisServer) -> None:
    admin = redis.Redis.from_url(own_redis.url)
    deliver(admin, LAYOUT, "graph", 2)
    rules, *selectors = MONITOR_ACL_RULES.split(" (")
    admin.execute_command(
        "ACL", "SETUSER", "monitor", "on", ">pw", *rules.split(), *("(" + s for s in selectors)
    )
    user = redis.Redis(host="127.0.0.1", port=own_redis.port, username="monitor", password="pw")
    reader = DepthReader(user, QUEUES, LAYOUT)

    readings = [reader.read() for _ in range(2)]

    assert readings[0].queues == readings[1].queues
    assert readings[1].queues["graph"] == QueueDepth(0, 2)
    assert readings[0].route_cache_error == readings[1].route_cache_error == ""
    assert readings[1].routes_cached == 2
    mark_sampling(user, 5)  # the one other key it writes: "producers, no need to wake me"
    assert 5000 < admin.pttl(SAMPLING_KEY) <= 7000
    with pytest.raises(redis.exceptions.NoPermissionError):
        user.set("beatless:monitor:wake", "1")
    # kombu's keys stay out of reach, directly or through a script
    for command in (("HSET", LAYOUT.unacked_hash_key, "x", "y"), ("UNLINK", "graph")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.execute_command(*command)
        sha = user.script_load(f"return redis.call('{command[0]}', KEYS[1], unpack(ARGV))")
        with pytest.raises(redis.exceptions.ResponseError, match=r"user executing the script"):
            user.evalsha(sha, 1, *command[1:])


def test_a_user_without_write_access_reads_exactly(own_redis: RedisServer) -> None:
    admin = redis.Redis.from_url(own_redis.url)
    deliver(admin, LAYOUT, "ingest", 3)
    admin.acl_setuser(
        "monitor",
        enabled=True,
        passwords=["+pw"],
        keys=["*"],
        commands=["+@read", "+evalsha", "+script|load"],
    )
    user = redis.Redis(host="127.0.0.1", port=own_redis.port, username="monitor", password="pw")
    reader = DepthReader(user, QUEUES, LAYOUT)

    reading = reader.read()

    assert reading.queues["ingest"] == QueueDepth(0, 3)
    assert reading.route_cache_error != ""
    assert admin.exists(reader.route_cache_key) == 0


# --- a real worker acknowledging messages while readings go on -----------------

CHURN_LAYOUT = TransportOptions(priority_steps=(0, 5), global_keyprefix="churn:")
CHURN_QUEUES = ("graph", "ingest")


@pytest.fixture
def churning_worker(own_redis: RedisServer) -> Iterator[str]:
    """A worker running short tasks (each acknowledged on completion) from a
    backlog that producers keep topping up."""
    app = depth_app.make_app(own_redis.url, CHURN_LAYOUT.as_kombu_options())
    for queue in CHURN_QUEUES:
        depth_app.send(app, queue, [p % 10 for p in range(60)], seconds=0.05)
    env = {
        **os.environ,
        "DEPTH_BROKER_URL": own_redis.url,
        "DEPTH_TRANSPORT_OPTIONS": json.dumps(CHURN_LAYOUT.as_kombu_options()),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    worker = subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "depth_app", "worker", "-Q", ",".join(CHURN_QUEUES),
            "-c", "4", "--pool", "prefork", "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-l", "warning",
        ],
        env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        yield own_redis.url
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)


@pytest.mark.slow
def test_readings_stay_exact_while_a_worker_acknowledges(churning_worker: str) -> None:
    url = churning_worker
    app = depth_app.make_app(url, CHURN_LAYOUT.as_kombu_options())
    client = redis.Redis.from_url(url, decode_responses=True)
    reader = DepthReader(connect(url), (*CHURN_QUEUES, "idle"), CHURN_LAYOUT)
    started = depth_app.STARTED_PREFIX

    def done() -> int:
        return sum(int(client.get(started + q) or 0) for q in CHURN_QUEUES)

    wait_for(lambda: done() > 0, timeout=60)
    readings: list[DepthReading] = []
    deadline = time.monotonic() + 60
    while len(readings) < 60 or done() < 100:
        assert time.monotonic() < deadline, f"the worker ran only {done()} tasks"
        readings.append(assert_exact(reader))
        if len(readings) % 10 == 0:
            depth_app.send(app, CHURN_QUEUES[len(readings) % 2], [0, 5, 9], seconds=0.05)
        time.sleep(0.02)

    # both paths were taken: tags seen before came from the cache, new ones were read
    assert sum(r.routes_cached for r in readings) > 0
    assert sum(r.routes_parsed for r in readings) > 0
    assert all(r.route_cache_error == "" and r.unparsed_reserved == 0 for r in readings)


def wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
