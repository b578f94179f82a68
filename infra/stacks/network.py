"""The network stack: the VPC (new, or an existing one given by context)."""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.components.network import Network
from infra.config import NetworkConfig


class NetworkStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: NetworkConfig,
        log_retention: logs.RetentionDays,
        **kwargs: Any,
    ):
        super().__init__(scope, id, **kwargs)
        self.network = Network(self, "Network", config=config, log_retention=log_retention)
