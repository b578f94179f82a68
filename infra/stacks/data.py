"""The data stack: PostgreSQL (new or existing) and the customer data bucket.

Stateful resources live apart from the code that uses them, so the jobs
stack can be replaced without touching data.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from constructs import Construct

from infra.components.customer_data import CustomerData
from infra.components.database import Database
from infra.components.network import Network
from infra.config import DatabaseConfig, StorageConfig


class DataStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        database: DatabaseConfig,
        storage: StorageConfig,
        network: Network,
        **kwargs: Any,
    ):
        super().__init__(scope, id, **kwargs)
        self.database = Database(
            self, "Database", config=database, vpc=network.vpc, subnets=network.private_subnets
        )
        self.customer_data = CustomerData(self, "CustomerData", config=storage)
