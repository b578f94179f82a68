"""Depth of Celery queues on a Redis broker, in one round trip.

Per queue, *pending* is the sum of LLEN over all of its priority lists and
*reserved* is the number of entries of the ``unacked`` hash (messages a
worker holds but has not acknowledged) whose routing key is that queue. Both
come from one Lua script (EVALSHA), so a reading is one round trip whatever
the number of queues, and the unacked messages (~1 KB each) never travel to
Python.

An absent key is an empty queue: it counts 0, but only because Redis answered.
Any failure to read (connection, timeout, authentication, script error)
raises `BrokerUnreadable`; a reading is never made of zeros by default.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from beatless.broker import TransportOptions
from beatless.errors import BeatlessError

SCRIPT = (Path(__file__).parent / "depth.lua").read_text(encoding="utf-8")


class BrokerUnreadable(BeatlessError):
    """Redis could not be read; nothing is known about the queues."""


class BrokerAuthenticationFailed(BrokerUnreadable):
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


class DepthReader:
    """Reads the depth of `queues` laid out as `options` describes."""

    def __init__(self, client: redis.Redis, queues: Iterable[str], options: TransportOptions) -> None:
        self.client = client
        self.queues = tuple(queues)
        self.options = options
        self._steps = len(options.priority_steps)
        self.keys = [key for queue in self.queues for key in options.queue_list_keys(queue)]
        self.keys.append(options.unacked_hash_key)
        self._script = client.register_script(SCRIPT)

    def read(self) -> DepthReading:
        """One reading: one EVALSHA (EVAL once after a script cache flush)."""
        try:
            reply = self._script(keys=self.keys, args=[self._steps, *self.queues], client=self.client)
        except redis.AuthenticationError as exc:
            raise BrokerAuthenticationFailed(f"Redis refused the credentials: {exc}") from exc
        except redis.RedisError as exc:
            raise BrokerUnreadable(f"Redis could not be read: {type(exc).__name__}: {exc}") from exc
        return self._parse(reply)

    def _parse(self, reply: Any) -> DepthReading:
        n = len(self.queues)
        if (
            not isinstance(reply, list)
            or len(reply) != 2 * n + 2
            or not all(isinstance(v, int) for v in reply)
        ):
            raise BrokerUnreadable(f"unexpected reply from the depth script: {reply!r:.200}")
        queues = {
            queue: QueueDepth(pending=reply[i], reserved=reply[n + i]) for i, queue in enumerate(self.queues)
        }
        return DepthReading(queues=queues, other_reserved=reply[-2], unparsed_reserved=reply[-1])
