"""Queue depth read from a real Redis filled by real Celery producers and
held by a real Celery worker: every count exact, and "could not read" is
never a zero."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import depth_app
import pytest
import redis

from beatless.local.servers import RedisServer, free_port
from beatless.queues import (
    BrokerAuthenticationError,
    BrokerUnreadableError,
    DepthReader,
    DepthReading,
    QueueDepth,
    connect,
)
from beatless.queues.transport import TransportOptions

HERE = Path(__file__).resolve().parent
DEFAULT_STEPS = TransportOptions(priority_steps=(0, 3, 6, 9))  # kombu's own default


@dataclass(frozen=True)
class Case:
    options: TransportOptions
    sends: dict[str, list[int]]  # queue -> one message per listed priority
    read: tuple[str, ...] = ()  # queues to read; default: those sent to


CASES = {
    "kombu default steps, priorities 0-9": Case(
        DEFAULT_STEPS, {"graph": [p for p in range(10) for _ in range(p + 1)], "ingest": [0, 3, 9]}
    ),
    "one list per priority (Beatless default)": Case(TransportOptions(), {"graph": list(range(10)) * 3}),
    "two steps [0, 5]": Case(TransportOptions(priority_steps=(0, 5)), {"a": list(range(10)), "b": [4, 5]}),
    "sep ':'": Case(TransportOptions(priority_steps=(0, 3, 6, 9), sep=":"), {"graph": list(range(10))}),
    "global_keyprefix": Case(
        TransportOptions(global_keyprefix="beatless:", priority_steps=(0, 3, 6, 9)), {"graph": [0, 5, 9, 9]}
    ),
    "queues with no keys at all": Case(DEFAULT_STEPS, {"graph": [1, 8]}, read=("graph", "ghost", "idle")),
    "names with dots and dashes": Case(DEFAULT_STEPS, {"graph.bulk-v2": [0, 9], "default": [2]}),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_pending_counts_every_priority_list(redis_url: str, case: Case) -> None:
    app = depth_app.make_app(redis_url, case.options.as_kombu_options())
    for queue, priorities in case.sends.items():
        depth_app.send(app, queue, priorities)
    queues = case.read or tuple(case.sends)

    reading = DepthReader(connect(redis_url), queues, case.options).read()

    assert reading.queues == {q: QueueDepth(pending=len(case.sends.get(q, [])), reserved=0) for q in queues}


def test_another_prefix_in_the_same_database_is_not_counted(redis_url: str) -> None:
    ours = TransportOptions(global_keyprefix="prod:")
    depth_app.send(depth_app.make_app(redis_url, ours.as_kombu_options()), "graph", [0, 9])
    depth_app.send(depth_app.make_app(redis_url, TransportOptions().as_kombu_options()), "graph", [0, 1, 2])

    reading = DepthReader(connect(redis_url), ["graph"], ours).read()

    assert reading.queues["graph"] == QueueDepth(pending=2, reserved=0)


# --- a real worker holds messages (acks_late, prefetch 1, a slow task) ---------

WORKER_LAYOUT = TransportOptions(priority_steps=(0, 5), sep=":", global_keyprefix="bl:")
CONSUMED = ("graph", "ingest", "ünïcode")  # the last one's routing key is JSON-escaped
CONCURRENCY = 4
SENT = {
    "graph": list(range(10)),
    "ingest": [0, 5, 9],
    "ünïcode": [0, 9],
    "idle": [3, 7],  # not consumed by the worker
}


@pytest.fixture(scope="module")
def busy_worker() -> Iterator[tuple[str, Counter[str]]]:
    """One worker process holding CONCURRENCY slow tasks; yields the broker URL
    and how many messages of each queue the worker started (its own record)."""
    with RedisServer() as server:
        app = depth_app.make_app(server.url, WORKER_LAYOUT.as_kombu_options())
        for queue, priorities in SENT.items():
            depth_app.send(app, queue, priorities, seconds=120)
        env = {
            **os.environ,
            "DEPTH_BROKER_URL": server.url,
            "DEPTH_TRANSPORT_OPTIONS": json.dumps(WORKER_LAYOUT.as_kombu_options()),
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        }
        worker = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "depth_app", "worker", "-Q", ",".join(CONSUMED),
                "-c", str(CONCURRENCY), "--pool", "prefork", "--without-gossip", "--without-mingle",
                "--without-heartbeat", "-l", "warning",
            ],
            env=env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            client = redis.Redis.from_url(server.url, decode_responses=True)
            started: Counter[str] = Counter()
            deadline = time.monotonic() + 60
            while sum(started.values()) < CONCURRENCY:
                assert worker.poll() is None, "the worker exited"
                assert time.monotonic() < deadline, f"worker started only {started}"
                time.sleep(0.05)
                keys = client.keys(depth_app.STARTED_PREFIX + "*")
                started = Counter(
                    {k.removeprefix(depth_app.STARTED_PREFIX): int(client.get(k)) for k in keys}
                )
            yield server.url, started
        finally:
            # SIGKILL the worker's whole session: its tasks stay unacked, as
            # the test wants, and the server is thrown away anyway.
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)


@pytest.mark.slow
def test_reserved_counts_what_a_running_worker_holds_per_queue(
    busy_worker: tuple[str, Counter[str]],
) -> None:
    url, started = busy_worker
    queues = (*CONSUMED, "idle", "ghost")

    reader = DepthReader(connect(url), queues, WORKER_LAYOUT)
    reading = reader.read()
    again = reader.read()  # every routing key from the route cache this time

    # prefetch 1 + acks_late: the worker holds exactly the tasks it runs
    assert sum(started.values()) == CONCURRENCY
    assert reading.queues == {
        q: QueueDepth(pending=len(SENT.get(q, [])) - started[q], reserved=started[q]) for q in queues
    }
    assert reading.other_reserved == 0
    assert reading.unparsed_reserved == 0
    assert again == DepthReading(queues=reading.queues, routes_cached=CONCURRENCY)


@pytest.mark.slow
def test_reserved_of_unread_queues_is_not_attributed(busy_worker: tuple[str, Counter[str]]) -> None:
    url, started = busy_worker

    reading = DepthReader(connect(url), ["graph"], WORKER_LAYOUT).read()

    assert reading.queues["graph"].reserved == started["graph"]
    assert reading.other_reserved == CONCURRENCY - started["graph"]


# --- unacked entries the pattern cannot read go through cjson -------------------


def test_routing_keys_are_read_whatever_their_encoding(redis_url: str) -> None:
    options = TransportOptions()
    client = redis.Redis.from_url(redis_url)
    message = {"body": "x" * 1000, "headers": {"id": "1"}, "properties": {"delivery_tag": "t"}}
    entries = {
        "plain": [message, "", "graph"],
        "escaped quote": [message, "", 'gr"aph'],
        "non-ascii": [message, "", "ünïcode"],
        "long": [message, "", "q" * 300],
        "null": [message, "", None],
    }
    for tag, entry in entries.items():
        client.hset(options.unacked_hash_key, tag, json.dumps(entry))
    client.hset(options.unacked_hash_key, "not json", b"\x00garbage")

    reading = DepthReader(connect(redis_url), ["graph", 'gr"aph', "ünïcode", "q" * 300], options).read()

    assert [d.reserved for d in reading.queues.values()] == [1, 1, 1, 1]
    assert reading.unparsed_reserved == 2  # the null routing key and the garbage


# --- failures surface; zeros come only from Redis -------------------------------


def test_stopped_redis_raises_instead_of_reading_zero() -> None:
    reader = DepthReader(connect(f"redis://127.0.0.1:{free_port()}/0"), ["graph"], TransportOptions())
    with pytest.raises(BrokerUnreadableError, match="ConnectionError"):
        reader.read()


def test_a_key_of_the_wrong_type_raises(redis_url: str) -> None:
    redis.Redis.from_url(redis_url).set("graph\x06\x163", "not a list")
    reader = DepthReader(connect(redis_url), ["graph"], TransportOptions())
    with pytest.raises(BrokerUnreadableError, match="WRONGTYPE"):
        reader.read()


def test_refused_password_is_an_authentication_failure() -> None:
    with RedisServer(password="s3cret-pw") as server:
        reader = DepthReader(connect(f"redis://127.0.0.1:{server.port}/0"), ["graph"], TransportOptions())
        with pytest.raises(BrokerAuthenticationError) as info:
            reader.read()
        assert isinstance(info.value, BrokerUnreadableError)
        assert "s3cret-pw" not in str(info.value)


def test_a_flushed_script_cache_is_reloaded(redis_url: str) -> None:
    depth_app.send(depth_app.make_app(redis_url, DEFAULT_STEPS.as_kombu_options()), "graph", [0, 9])
    reader = DepthReader(connect(redis_url), ["graph"], DEFAULT_STEPS)
    assert reader.read().queues["graph"].pending == 2
    redis.Redis.from_url(redis_url).script_flush()  # as after a Redis restart or failover

    assert reader.read().queues["graph"].pending == 2
