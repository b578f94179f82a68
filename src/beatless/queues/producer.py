"""Sending a Celery task from a Lambda without importing Celery (its cold start counts).

The message is what Celery 5 (task protocol 2, JSON) puts on Redis through kombu —
`headers` naming the task and its id, `properties` with the delivery info, the body
`[args, kwargs, embed]` base64-encoded — pushed onto the list of its queue and
priority (`beatless.queues.transport`), as kombu's Redis transport does. A test has a
real worker run a message made here.

`send_once` puts a message at most once per task id: one Lua script sets a marker
(`SET NX` with a time to live) and pushes only if it set it, so a replayed or concurrent
producer run enqueues nothing twice while the marker lives.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any

from beatless.queues.priorities import DEFAULT_CELERY_PRIORITY
from beatless.queues.transport import TransportOptions

SENT_KEY_PREFIX = "beatless:sent:"
DEFAULT_ONCE_TTL_SECONDS = 24 * 3600

# KEYS: marker, queue list; ARGV: task id, message, ttl
_SEND_ONCE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', tonumber(ARGV[3])) then
  redis.call('LPUSH', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


def task_message(
    task: str,
    task_id: str,
    queue: str,
    *,
    kwargs: Mapping[str, Any] | None = None,
    priority: int = DEFAULT_CELERY_PRIORITY,
) -> str:
    """The JSON kombu stores for `task(**kwargs)` with id `task_id`, routed to `queue`."""
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    body = json.dumps([[], dict(kwargs or {}), embed])
    message = {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": "()",
            "kwargsrepr": repr(dict(kwargs or {}))[:1024],
            "origin": f"{os.getpid()}@{socket.gethostname()}",
            "ignore_result": False,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": str(uuid.uuid4()),
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": priority,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(message)


def send_once(
    client: Any,
    transport: TransportOptions,
    task: str,
    task_id: str,
    queue: str,
    *,
    kwargs: Mapping[str, Any] | None = None,
    priority: int = DEFAULT_CELERY_PRIORITY,
    ttl_seconds: int = DEFAULT_ONCE_TTL_SECONDS,
) -> bool:
    """Put the task on its queue unless a message of `task_id` was put in the last
    `ttl_seconds`; True when this call put it."""
    marker = f"{transport.global_keyprefix}{SENT_KEY_PREFIX}{task_id}"
    step = transport.priority_bucket(priority)
    queue_key = transport.queue_list_key(queue, step)
    message = task_message(task, task_id, queue, kwargs=kwargs, priority=priority)
    return bool(client.eval(_SEND_ONCE, 2, marker, queue_key, task_id, message, ttl_seconds))
