"""Worker presence in a real Redis: a reader sees every live worker in one round trip,
removes a worker's line once it missed three of its own beats (never sooner than the
floor), leaves a line the worker rewrote meanwhile, and drops lines no worker wrote."""

from __future__ import annotations

from typing import Any

import redis

from beatless.workers import presence

NOW = 1_800_000_000.0


def test_a_line_goes_stale_after_three_of_its_own_intervals(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    presence.publish(client, "slow", tasks=1, protected=True, queues=["graph"], every=40, now=NOW - 110)
    presence.publish(client, "fast", tasks=0, protected=None, queues=["graph"], every=5, now=NOW - 25)
    presence.publish(client, "gone", tasks=0, protected=None, queues=["graph"], every=5, now=NOW - 31)
    client.hset(presence.KEY, "junk", "not json")
    live = presence.read(client, now=NOW)
    assert [(w.name, w.state, w.protected) for w in live] == [("fast", "idle", None), ("slow", "busy", True)]
    assert sorted(client.hkeys(presence.KEY)) == [b"fast", b"slow"]
    assert [w.name for w in presence.read(client, now=NOW + 6)] == ["slow"]  # fast missed its beats


class RewritesAfterReading:
    """A client through which a worker writes its line again between the reader's two calls."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def hgetall(self, key: str) -> Any:
        lines = self.client.hgetall(key)
        presence.publish(self.client, "busy-worker", tasks=1, protected=False, queues=["graph"], now=NOW)
        return lines

    def eval(self, *args: Any) -> Any:
        return self.client.eval(*args)


def test_a_line_rewritten_while_the_reader_decides_is_kept(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    presence.publish(client, "busy-worker", tasks=1, protected=False, queues=["graph"], now=NOW - 600)
    assert presence.read(RewritesAfterReading(client), now=NOW) == []  # it read the old line
    (kept,) = presence.read(client, now=NOW)
    assert kept.name == "busy-worker" and kept.at == NOW  # the new line survived the reader


def test_a_stopping_worker_withdraws_its_line(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    presence.publish(client, "w", tasks=0, protected=None, queues=["graph"], now=NOW)
    presence.withdraw(client, "w")
    assert presence.read(client, now=NOW) == []
