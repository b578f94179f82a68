"""The monitoring stack: the alarm topic and the stale-heartbeat alarm.

It references no other stack's resources (only names and metric constants),
so every other stack can send its alarms here. The workers' dashboard is in the
worker stack, next to the scaling alarms it shows.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from constructs import Construct

from infra.components.alarm_topic import AlarmTopic
from infra.components.monitor_health import MonitorHealth
from infra.config import Config


class MonitoringStack(Stack):
    def __init__(self, scope: Construct, id: str, *, config: Config, **kwargs: Any):
        super().__init__(scope, id, **kwargs)
        self.alarms = AlarmTopic(self, "Alarms", email=config.alarm_email)
        self.monitor_health = MonitorHealth(
            self,
            "MonitorHealth",
            namespace=config.metrics_namespace,
            scaling=config.worker.scaling,
            topic=self.alarms.topic,
        )
