"""The broker stack: the Celery broker (ElastiCache Redis) and its AUTH secret."""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from constructs import Construct

from infra.components.network import Network
from infra.components.redis_broker import RedisBroker
from infra.config import BrokerConfig


class BrokerStack(Stack):
    def __init__(self, scope: Construct, id: str, *, config: BrokerConfig, network: Network, **kwargs: Any):
        super().__init__(scope, id, **kwargs)
        self.broker = RedisBroker(
            self, "Broker", config=config, vpc=network.vpc, subnets=network.private_subnets
        )
