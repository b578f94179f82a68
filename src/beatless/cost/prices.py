"""AWS list prices used by the cost report: US East (N. Virginia), on-demand, x86.

From AWS's public pricing pages, as they stood when this table was written (2025); this
machine has no network, so they were not re-read on the date the report prints. Change
the table (and PRICES_AS_OF) when they change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

PRICES_AS_OF = date(2025, 6, 1)
REGION = "us-east-1"
SOURCES = (
    "https://aws.amazon.com/lambda/pricing/",
    "https://aws.amazon.com/eventbridge/pricing/ (EventBridge Scheduler)",
    "https://aws.amazon.com/cloudwatch/pricing/",
    "https://aws.amazon.com/fargate/pricing/",
)


@dataclass(frozen=True)
class Prices:
    lambda_per_request: float = 0.20 / 1_000_000
    lambda_per_gb_second: float = 0.0000166667  # x86
    scheduler_per_invocation: float = 1.00 / 1_000_000
    metric_per_month: float = 0.30  # a custom metric (first 10,000)
    put_metric_data_per_request: float = 0.01 / 1_000
    alarm_standard_per_month: float = 0.10  # per metric of an alarm, 60 s periods and longer
    alarm_high_resolution_per_month: float = 0.30  # periods under 60 s
    dashboard_per_month: float = 3.00
    fargate_per_vcpu_hour: float = 0.04048
    fargate_per_gb_hour: float = 0.004445


@dataclass(frozen=True)
class FreeTier:
    """What AWS gives every account each month, for ever (the report shows both)."""

    lambda_requests: int = 1_000_000
    lambda_gb_seconds: int = 400_000
    scheduler_invocations: int = 14_000_000
    metrics: int = 10
    alarms: int = 10
    api_requests: int = 1_000_000
    dashboards: int = 3


LIST = Prices()
FREE = FreeTier()
