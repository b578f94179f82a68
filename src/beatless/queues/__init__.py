"""Reading Celery queues on the Redis broker (depth: pending + reserved)."""

from beatless.queues.connection import Broker, SecretPassword, connect
from beatless.queues.depth import (
    BrokerAuthenticationError,
    BrokerUnreadableError,
    DepthReader,
    DepthReading,
    QueueDepth,
)

__all__ = [
    "Broker",
    "BrokerAuthenticationError",
    "BrokerUnreadableError",
    "DepthReader",
    "DepthReading",
    "QueueDepth",
    "SecretPassword",
    "connect",
]
