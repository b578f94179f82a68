"""Reading Celery queues on the Redis broker (depth: pending + reserved)."""

from beatless.queues.connection import Broker, SecretPassword, connect
from beatless.queues.depth import (
    BrokerAuthenticationFailed,
    BrokerUnreadable,
    DepthReader,
    DepthReading,
    QueueDepth,
)

__all__ = [
    "Broker",
    "BrokerAuthenticationFailed",
    "BrokerUnreadable",
    "DepthReader",
    "DepthReading",
    "QueueDepth",
    "SecretPassword",
    "connect",
]
