"""Depth of Celery queues on a Redis broker, in one round trip.

Per queue, *pending* is the sum of LLEN over all of its priority lists and
*reserved* is the number of entries of the ``unacked`` hash (messages a
worker holds but has not acknowledged) whose routing key is that queue. Both
come from one Lua script (EVALSHA), so a reading is one round trip whatever
the number of queues, and the unacked messages (~1 KB each) never travel to
Python.

An absent key is an empty queue: it counts 0, but only because Redis answered.
Any failure to read (connection, timeout, authentication, script error)
raises `BrokerUnreadableError`; a reading is never made of zeros by default.

**The route cache: the monitor writes to Redis.** Copying every ~1 KB unacked
value into Lua to find its routing key was nearly all the cost of a reading.
The script therefore keeps a hash ``<global_keyprefix><unacked_key>:beatless-routes``
(delivery tag -> routing key) and reads only the values of tags it has not
seen yet. kombu fixes a message's delivery tag (a fresh uuid4 per publish)
and its routing key together, inside the message, and a redelivery re-pushes
the same message, so a tag's routing key never changes and a cached one is
never wrong. Another writer that overwrote an existing unacked entry with
another routing key under the same tag would not be seen; kombu never does.

- Writes per reading: HSET of the tags first seen, EXPIRE (1 day, so the
  cache goes away with the monitor); when entries of tags no longer unacked
  outnumber half the unacked entries, UNLINK and a rewrite. The cache holds
  at most 1.5 entries (~100 bytes each) per unacked entry. A reading that
  learns nothing new writes nothing.
- Caching a tag costs about a third of reading its value, so it only pays
  when reserved messages outlive a reading. Above 1,000 unacked entries the
  script looks up a sample of 1,000 first and caches the rest only when the
  cache knew a third of the sample; when nearly every message is new at every
  reading it reads them as without a cache (plus ~1 ms for the sample).
- The script declares every key it touches in KEYS (lists, the unacked hash,
  the cache), so the key layout rules of scripts hold. `MONITOR_ACL_RULES`
  is what the monitor's Redis user needs: EVALSHA wants write access to the
  keys it is given, so the write commands are allowed on route caches only.
- The cache is an optimisation, never a source of truth: a deleted or flushed
  cache, a Redis restart, acknowledged or new messages only cost parsing.
  When Redis refuses the cache's reads or writes (a read-only replica, OOM
  under ``maxmemory``, an ACL user without HSET/UNLINK/EXPIRE on that key) the
  reading still reads every value, stays exact, and reports why in
  `DepthReading.route_cache_error` (logged once per change). A depth reading
  is never lost because its cache cannot be written.
- ``route_cache=False`` leaves the key alone: every value is read, no write.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from beatless.errors import BeatlessError, InvalidInputError
from beatless.queues.transport import TransportOptions

SCRIPT = (Path(__file__).parent / "depth.lua").read_text(encoding="utf-8")
ROUTE_CACHE_SUFFIX = ":beatless-routes"
# What the monitor's Redis user needs (ACL SETUSER <user> on ><password> <rules>).
# EVALSHA needs read-write access to the keys it is given, so writes are kept
# to the route caches by the commands allowed: read commands on every key,
# the cache's write commands only on route caches (a Redis 7 selector).
MONITOR_ACL_RULES = (
    "resetkeys ~* resetchannels -@all +evalsha +script|load +llen +hkeys +hget +hlen +hmget +ttl "
    f"(~*{ROUTE_CACHE_SUFFIX} +hset +unlink +expire) (~*beatless:monitor:sampling +set)"
)

log = logging.getLogger(__name__)


def route_cache_key(options: TransportOptions) -> str:
    """The route cache of `options`' unacked hash: one per unacked hash, so
    two kombu layouts in one database never evict each other's entries, and
    it shares the hash's cluster hash tag, if any."""
    return options.unacked_hash_key + ROUTE_CACHE_SUFFIX


class BrokerUnreadableError(BeatlessError):
    """Redis could not be read; nothing is known about the queues."""


class BrokerAuthenticationError(BrokerUnreadableError):
    """Redis refused the password (it may have been rotated)."""


@dataclass(frozen=True)
class QueueDepth:
    pending: int  # waiting in the queue's priority lists
    reserved: int  # delivered to a worker, not yet acknowledged

    @property
    def total(self) -> int:
        return self.pending + self.reserved


@dataclass(frozen=True)
class DepthReading:
    queues: Mapping[str, QueueDepth]
    # unacked entries that belong to none of the read queues, and entries whose
    # routing key could not be parsed; neither is attributed to a queue.
    other_reserved: int = 0
    unparsed_reserved: int = 0
    # How the unacked entries' routing keys were found: from the route cache,
    # or by reading their value; and why the cache could not be used, if so.
    routes_cached: int = 0
    routes_parsed: int = 0
    route_cache_error: str = ""


class DepthReader:
    """Reads the depth of `queues` laid out as `options` describes."""

    def __init__(
        self,
        client: redis.Redis,
        queues: Iterable[str],
        options: TransportOptions,
        *,
        route_cache: bool = True,
    ) -> None:
        self.client = client
        self.queues = tuple(queues)
        self.options = options
        self.route_cache_key = route_cache_key(options)
        not_lists = (options.unacked_hash_key, self.route_cache_key)
        self.keys = []
        for queue in self.queues:
            for key in options.queue_list_keys(queue):
                if key in not_lists:
                    raise InvalidInputError("QUEUES", f"queue {queue!r} would be read from the hash {key!r}")
                self.keys.append(key)
        self.keys += not_lists
        self.args: list[str | int] = [len(options.priority_steps), 1 if route_cache else 0, *self.queues]
        self.script = client.register_script(SCRIPT)
        self._last_cache_error = ""

    def read(self) -> DepthReading:
        """One reading: one EVALSHA (EVAL once after a script cache flush)."""
        try:
            reply = self.script(keys=self.keys, args=self.args, client=self.client)
        except redis.AuthenticationError as exc:
            raise BrokerAuthenticationError(f"Redis refused the credentials: {exc}") from exc
        except redis.RedisError as exc:
            raise BrokerUnreadableError(f"Redis could not be read: {type(exc).__name__}: {exc}") from exc
        reading = self.parse(reply)
        if reading.route_cache_error != self._last_cache_error:
            if reading.route_cache_error:
                log.warning(
                    "queue depth: route cache %s unusable, every unacked value is read (exact, slower): %s",
                    self.route_cache_key,
                    reading.route_cache_error,
                )
            else:
                log.info("queue depth: route cache %s usable again", self.route_cache_key)
            self._last_cache_error = reading.route_cache_error
        return reading

    def parse(self, reply: Any) -> DepthReading:
        """The reading of the script's reply (also for a reply from a pipeline)."""
        n = len(self.queues)
        if (
            not isinstance(reply, list)
            or len(reply) != 2 * n + 5
            or not all(isinstance(v, int) for v in reply[:-1])
            or not isinstance(reply[-1], bytes | str)
        ):
            raise BrokerUnreadableError(f"unexpected reply from the depth script: {reply!r:.200}")
        queues = {
            queue: QueueDepth(pending=reply[i], reserved=reply[n + i]) for i, queue in enumerate(self.queues)
        }
        error = reply[-1]
        return DepthReading(
            queues=queues,
            other_reserved=reply[2 * n],
            unparsed_reserved=reply[2 * n + 1],
            routes_cached=reply[2 * n + 2],
            routes_parsed=reply[2 * n + 3],
            route_cache_error=error.decode("utf-8", "replace") if isinstance(error, bytes) else error,
        )
