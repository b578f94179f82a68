"""Storage usage and billing (PostgreSQL + the customer data bucket).

- `sources`: where bytes are measured (`S3PrefixUsage`, `GraphSizeSource`,
  `DirectoryGraphSizes`), behind the `UsageSource` protocol;
- `collector`: storage_usage_collector, one snapshot per graph and hour;
- `billing`: storage_billing, one charge per graph and day (`daily_charge`).
"""

from __future__ import annotations

from beatless.storage.billing import DailyCharge, UntieredGraphsError, bill_storage, daily_charge, ledger_key
from beatless.storage.collector import CollectorSettings, collect_storage_usage
from beatless.storage.sources import (
    CATEGORIES,
    DirectoryGraphSizes,
    GraphSize,
    GraphSizeSource,
    S3PrefixUsage,
    Usage,
    UsageSource,
    graph_size_usage,
    measure,
)

__all__ = [
    "CATEGORIES",
    "CollectorSettings",
    "DailyCharge",
    "DirectoryGraphSizes",
    "GraphSize",
    "GraphSizeSource",
    "S3PrefixUsage",
    "UntieredGraphsError",
    "Usage",
    "UsageSource",
    "bill_storage",
    "collect_storage_usage",
    "daily_charge",
    "graph_size_usage",
    "ledger_key",
    "measure",
]
